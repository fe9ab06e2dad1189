"""How versions, index entries and jobs are laid out as MongoDB documents.

`resources` holds one document per resource: its current version (the JSON bytes as
stored, None for a deletion) with the search index embedded, one array per parameter
type, each element naming its parameter in `p`. A compound multikey index per type
then serves every parameter of that type (MongoDB allows 64 indexes a collection, and
R4 defines about 1,400 parameters). `versions` holds every version under its change-log
sequence number; `jobs` the leased background work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from fhirserver.search.query import (
    ENTRY_KIND,
    MAX_MICROS,
    MIN_MICROS,
    DateEntry,
    IndexEntry,
    NumberEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
)
from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Job, Record, Version

Document = dict[str, Any]

# Bumped when the layout of the embedded index changes: the app then rebuilds it.
# 2: index values cut to INDEX_CUT characters (search/extract.py).
# 3: composite groups indexed only when every component has a value.
LAYOUT_VERSION = 3

# Beyond every stored string: the upper bound of a prefix range, and where a resource
# without the sort parameter goes in an ascending sort.
STRING_END = "\U0010ffff"

# The array of each parameter type, and the element fields that hold its values.
ARRAYS: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "string": ("str", (("n", "normalized"), ("e", "exact"))),
    "token": ("tok", (("s", "system"), ("c", "code"))),
    "date": ("date", (("lo", "low"), ("hi", "high"))),
    "number": (
        "num",
        (("lo", "low"), ("hi", "high"), ("s", "system"), ("c", "code"), ("u", "unit")),
    ),
    "reference": ("ref", (("tt", "target_type"), ("ti", "target_id"), ("u", "url"))),
    "uri": ("uri", (("v", "value"),)),
}
ARRAY_OF_KIND = {kind: array for kind, (array, _) in ARRAYS.items()} | {"quantity": "num"}
INDEX_FIELDS = (*(array for array, _ in ARRAYS.values()), "comp", "sort")

# Search parameters with an index for `_sort` (each direction); ties go by id.
SORTED_PARAMETERS = ("birthdate", "date")

# (collection, keys, options): a few compound multikey indexes per parameter type
# rather than one per parameter. Each leads with the field every query pins first.
INDEXES: tuple[tuple[str, tuple[tuple[str, int], ...], Mapping[str, Any]], ...] = (
    ("resources", (("type", 1), ("id", 1)), {"unique": True}),
    ("resources", (("type", 1), ("str.p", 1), ("str.n", 1)), {}),
    ("resources", (("type", 1), ("tok.p", 1), ("tok.c", 1), ("tok.s", 1)), {}),
    ("resources", (("type", 1), ("date.p", 1), ("date.lo", 1), ("date.hi", 1)), {}),
    ("resources", (("type", 1), ("num.p", 1), ("num.lo", 1), ("num.hi", 1)), {}),
    # Chains, _has and _revinclude look references up by their target.
    ("resources", (("ref.ti", 1), ("ref.tt", 1), ("ref.p", 1), ("type", 1)), {}),
    ("resources", (("ref.u", 1),), {"sparse": True}),
    ("resources", (("type", 1), ("uri.p", 1), ("uri.v", 1)), {}),
    # A composite's first component: code-value-quantity by its code, and the like.
    ("resources", (("type", 1), ("comp.p", 1)), {}),
    # `_lastUpdated` criteria, and `_sort=_lastUpdated` either way read in order (ties
    # by id, ascending).
    ("resources", (("type", 1), ("lu", 1), ("id", 1)), {}),
    ("resources", (("type", 1), ("lu", -1), ("id", 1)), {}),
    *(
        # `_sort` on these parameters reads in index order (search.py page_pipelines):
        # the sorts clients ask for most, a patient's birth date and a clinical
        # resource's date. A sort on another parameter sorts what its criteria select.
        ("resources", (("type", 1), (f"sort.{param}.{key}", direction), ("id", 1)), {})
        for param in SORTED_PARAMETERS
        for key, direction in (("a", 1), ("d", -1))
    ),
    ("versions", (("type", 1), ("id", 1), ("version", 1)), {"unique": True}),
    ("versions", (("type", 1), ("_id", 1)), {}),
    ("versions", (("lu", 1),), {}),
    ("jobs", (("kind", 1), ("due", 1)), {}),
    ("records", (("kind", 1), ("key", 1)), {}),
    # MongoDB's TTL monitor removes records some time after they expire (reads ignore
    # expired ones already): an hour late, so that a server whose clock runs behind
    # the database's still sees what it wrote.
    ("records", (("purge_after", 1),), {"expireAfterSeconds": 3600}),
    # A guard is needed only while units that wrote it are open (unit.py).
    ("guards", (("at", 1),), {"expireAfterSeconds": 3600}),
)


def resource_key(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}/{resource_id}"


def keys_filter(
    keys: Iterable[tuple[str, str]], type_field: str = "type", id_field: str = "id"
) -> Document:
    """Resources by (type, id) (or reference elements by target: `tt`, `ti`), named by
    type and id rather than by `_id` alone: the shape the (type, id) indexes serve, and
    on a cluster sharded on {type, id} each lookup goes to the shards that hold them."""
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    alternatives = [
        {type_field: t, id_field: {"$in": sorted(ids)}} for t, ids in sorted(by_type.items())
    ]
    if not alternatives:
        return {type_field: {"$in": []}}
    return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}


# A body longer than this is kept in `bodies`, in chunks of this size, named by the
# version's seq; the version and resource documents keep an empty body and the chunk
# count. So a resource up to the body limit (16 MiB) is stored whatever its size,
# beside its index, under MongoDB's 16 MiB document limit (as GridFS splits a file).
BODY_CHUNK = 4 * 1024 * 1024


def version_document(version: Version, seq: int) -> Document:
    body = version.body
    document: Document = {
        "_id": seq,
        "type": version.resource_type,
        "id": version.id,
        "version": version.version,
        "lu": to_micros(version.last_updated),
        "method": version.method,
        "body": body,
    }
    if body is not None and len(body) > BODY_CHUNK:
        document["body"] = b""
        document["chunks"] = -(-len(body) // BODY_CHUNK)
    return document


def body_chunks(version: Version, seq: int) -> list[Document]:
    """The `bodies` documents of a version whose body is kept apart; none otherwise."""
    body = version.body
    if body is None or len(body) <= BODY_CHUNK:
        return []
    return [
        {"_id": chunk_id(seq, n), "data": body[start : start + BODY_CHUNK]}
        for n, start in enumerate(range(0, len(body), BODY_CHUNK))
    ]


def chunk_id(seq: int, n: int) -> str:
    return f"{seq}/{n}"


def resource_document(version: Version, seq: int, index: Iterable[IndexEntry]) -> Document:
    """The current-version document; a deletion keeps no index entries."""
    document = version_document(version, seq)
    document["_id"] = resource_key(version.resource_type, version.id)
    document["seq"] = seq
    document.update(index_fields(() if version.body is None else index))
    return document


def version_of(document: Mapping[str, Any]) -> Version:
    body = document["body"]
    return Version(
        document["type"],
        document["id"],
        document["version"],
        from_micros(document["lu"]),
        document["method"],
        None if body is None else bytes(body),
        document["seq"] if "seq" in document else document["_id"],
    )


def index_fields(entries: Iterable[IndexEntry]) -> Document:
    """The index arrays, the composite groups and the sort keys of a resource."""
    arrays: dict[str, list[Document]] = {array: [] for array, _ in ARRAYS.values()}
    groups: dict[tuple[str, int], Document] = {}
    sort: dict[str, list[Any]] = {}
    for entry in entries:
        array, fields = ARRAYS[ENTRY_KIND[type(entry)]]
        element: Document = {"p": entry.param}
        element.update((name, getattr(entry, attribute)) for name, attribute in fields)
        arrays[array].append(element)
        if entry.group is not None and "#" in entry.param:
            # One element per repeating element of a composite, each component's entries
            # in their own array: a composite query is one $elemMatch (search.html#composite).
            base, position = entry.param.rsplit("#", 1)
            group = groups.setdefault((base, entry.group), {"p": base})
            group.setdefault(f"c{position}", []).append(element)
        low, high = _sort_values(entry)
        if low is not None:
            keys = sort.setdefault(entry.param, [low, high])
            keys[0], keys[1] = min(keys[0], low), max(keys[1], high)
    document: Document = {array: elements for array, elements in arrays.items() if elements}
    if groups:
        document["comp"] = list(groups.values())
    # Ascending sorts take the least value of a parameter, descending the greatest, as
    # the SQLite store does; precomputed so that `_sort` is a plain field sort.
    document["sort"] = {param: {"a": low, "d": high} for param, (low, high) in sort.items()}
    return document


def _sort_values(entry: IndexEntry) -> tuple[Any, Any]:
    """(the value an ascending sort uses, the one a descending sort uses)."""
    if isinstance(entry, StringEntry):
        return entry.normalized, entry.normalized
    if isinstance(entry, TokenEntry):
        return entry.code, entry.code
    if isinstance(entry, DateEntry | NumberEntry):
        return entry.low, entry.high
    if isinstance(entry, ReferenceEntry):
        if entry.target_type is not None and entry.target_id is not None:
            value = f"{entry.target_type}/{entry.target_id}"
            return value, value
        return entry.url, entry.url
    return entry.value, entry.value


def missing_sort_value(kind: str, descending: bool) -> Any:
    """Where resources without a value go: last, whichever the direction."""
    if kind == "date":
        return MIN_MICROS if descending else MAX_MICROS
    if kind in ("number", "quantity"):
        return -1e308 if descending else 1e308
    return "" if descending else STRING_END


def job_document(job: Job) -> Document:
    return {
        "_id": f"{job.kind}/{job.key}",
        "kind": job.kind,
        "key": job.key,
        "due": to_micros(job.due),
        "payload": job.payload,
        "attempts": job.attempts,
        "owner": job.owner,
        "lease_until": None if job.lease_until is None else to_micros(job.lease_until),
    }


def job_of(document: Mapping[str, Any]) -> Job:
    lease_until = document["lease_until"]
    return Job(
        document["kind"],
        document["key"],
        from_micros(document["due"]),
        bytes(document["payload"]),
        document["attempts"],
        document["owner"],
        None if lease_until is None else from_micros(lease_until),
    )


def record_id(kind: str, key: str) -> str:
    if ":" in kind:
        raise ValueError("A record kind has no ':'")
    return f"{kind}:{key}"


def record_document(
    kind: str, key: str, body: dict[str, Any], expires: datetime | None
) -> Document:
    """`body` as JSON text, so that any key (a dot, a leading $) is stored as given,
    with its keys sorted (equal bodies are equal text, for `record_is`); `exp` for
    queries, `purge_after` (a BSON date) for the TTL index."""
    return {
        "_id": record_id(kind, key),
        "kind": kind,
        "key": key,
        "body": record_text(body),
        "exp": None if expires is None else to_micros(expires),
        "purge_after": expires,
    }


def record_text(body: dict[str, Any]) -> str:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def record_is(kind: str, key: str, body: dict[str, Any]) -> Document:
    """The filter of the record whose body is `body` (a compare-and-set's condition)."""
    return {"_id": record_id(kind, key), "body": record_text(body)}


def live_record(now: datetime) -> Document:
    """The filter of records unexpired at `now`."""
    return {"$or": [{"exp": None}, {"exp": {"$gt": to_micros(now)}}]}


def record_body(document: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(document["body"])
    return body


def record_of(document: Mapping[str, Any]) -> Record:
    exp = document["exp"]
    return Record(
        document["kind"],
        document["key"],
        record_body(document),
        None if exp is None else from_micros(exp),
    )
