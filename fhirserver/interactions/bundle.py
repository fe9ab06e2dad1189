"""batch and transaction (R4 http.html#transaction): a Bundle of interactions at once.

A transaction runs in one unit of work, in four steps:
1. resolve: give every write its resource id. Creates get new ids, or the match of
   their `ifNoneExist` (in the store, or an earlier create of this Bundle); conditional
   updates, patches and deletes get their match. All lookups happen inside the unit,
   so a concurrent transaction cannot slip in between lookup and write.
2. rewrite: each reference to an entry's fullUrl (a `urn:uuid:` / `urn:oid:`
   placeholder, or the URL the resource had elsewhere) becomes `Type/id`; each
   conditional reference (`Organization?identifier=x|y`) becomes its single match.
3. check: no two entries may write the same resource.
4. execute, in the spec's order (DELETE, POST, PUT / PATCH, GET / HEAD). Any failure
   raises, naming the entry, and the unit rolls back: nothing is left behind.

A batch runs each entry alone through the same steps, in its own unit of work; an
entry's failure is its own response. Responses come back in request order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhirserver.errors import (
    BadRequest,
    FHIRError,
    Issue,
    NotFound,
    NotSupported,
    PreconditionFailed,
)
from fhirserver.interactions import crud
from fhirserver.interactions.history import HistoryPage, history
from fhirserver.interactions.patches import Patcher, entry_patcher
from fhirserver.interactions.paths import Target, parse_path
from fhirserver.interactions.preconditions import (
    NO_PRECONDITIONS,
    Preconditions,
    check_body_id,
    if_none_exist_criteria,
    parse_preconditions,
)
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.search import search, system_scope
from fhirserver.resources import meta
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import is_placeholder, references, rewrite_references
from fhirserver.resources.validate import validate
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_criteria
from fhirserver.search.query import IndexEntry, SearchQuery
from fhirserver.storage.base import Reader, SearchResult, Store, UnitOfWork, Version

Params = list[tuple[str, str]]

# R4 http.html#trules: the order a transaction's entries are processed in.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How the GET entries of a Bundle page and handle parameters."""

    base_url: str = ""
    strict: bool = False
    search_page_size: int = 20
    history_page_size: int = 50
    max_page_size: int = 1000


@dataclass(slots=True)
class Entry:
    """One Bundle.entry as a request; the id fields are filled in by resolution."""

    index: int
    method: str
    url: str
    # request.url's path relative to the base, and what it names.
    path: str
    target: Target
    params: Params
    resource: JSONObject | None = None
    full_url: str | None = None
    preconditions: Preconditions = NO_PRECONDITIONS
    if_none_exist: Params | None = None
    patcher: Patcher | None = None
    # A FHIRPath Patch's Parameters: its values may link to other entries too.
    patch_parameters: JSONObject | None = None
    # The resource this entry writes or reads, once known.
    resource_id: str | None = None
    # A create whose ifNoneExist matched: the stored match, or an earlier entry's create.
    existing: Version | None = None
    same_as: Entry | None = None
    # The current version of what the entry updates, patches or deletes.
    current: Version | None = None
    # The resource's index entries, if worked out beforehand (by an import's worker
    # process); dropped when the transaction rewrites one of its references.
    search_index: tuple[IndexEntry, ...] | None = None

    @property
    def resource_type(self) -> str:
        assert self.target.resource_type is not None
        return self.target.resource_type

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD") and self.existing is None and not self.same_as


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What one entry did: a status, and the version, search page or history page it
    produced, or the error it met (batch only)."""

    entry: Entry | None
    status: int
    version: Version | None = None
    search: tuple[SearchQuery, SearchResult] | None = None
    history: HistoryPage | None = None
    error: FHIRError | None = None


async def process(
    store: Store, context: WriteContext, bundle: JSONObject, options: ReadOptions
) -> list[EntryResult]:
    """Run a batch or transaction Bundle; the results in request order."""
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(
            f"POST to the base takes a batch or transaction Bundle, not type {kind!r}",
            expression="Bundle.type",
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be a list", expression="Bundle.entry")
    if kind == "transaction":
        entries = read_entries(raw_entries, options.base_url)
        return await transaction(store, context, entries, options)
    return await batch(store, context, raw_entries, options)


def read_entries(raw_entries: list[Any], base_url: str, validated: bool = False) -> list[Entry]:
    """The entries of a transaction; `validated` when their resources were already
    checked (by `fhirserver import`'s worker processes)."""
    entries = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(read_entry(index, raw, base_url, validated))
        except FHIRError as exc:
            raise _at(exc, index) from None
    return entries


async def transaction(
    store: Store, context: WriteContext, entries: list[Entry], options: ReadOptions
) -> list[EntryResult]:
    async with store.unit_of_work() as unit:
        results = await _run(unit, context, entries, options)
    return [results[entry.index] for entry in entries]


async def batch(
    store: Store, context: WriteContext, raw_entries: list[Any], options: ReadOptions
) -> list[EntryResult]:
    """Each entry alone, in its own unit of work, in the transaction order; a failure
    is that entry's answer."""
    results: dict[int, EntryResult] = {}
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(read_entry(index, raw, options.base_url))
        except FHIRError as exc:
            results[index] = EntryResult(None, exc.status, error=exc)
    for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
        try:
            async with store.unit_of_work() as unit:
                results.update(await _run(unit, context, [entry], options))
        except FHIRError as exc:
            results[entry.index] = EntryResult(entry, exc.status, error=exc)
    return [results[index] for index in range(len(raw_entries))]


def read_entry(index: int, raw: Any, base_url: str, validated: bool = False) -> Entry:
    """Parse and check one entry: its request, and its resource validated."""
    if not isinstance(raw, dict):
        raise BadRequest("A Bundle entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest("The entry has no request", expression="request")
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER:
        raise BadRequest(f"Unknown request.method {method!r}", expression="request.method")
    if not isinstance(url, str) or not url:
        raise BadRequest("The entry has no request.url", expression="request.url")
    path, params = _split_url(url, base_url)
    full_url = raw.get("fullUrl")
    entry = Entry(
        index,
        method,
        url,
        path,
        parse_path(path),
        params,
        full_url=full_url if isinstance(full_url, str) else None,
        preconditions=parse_preconditions(
            _string(request, "ifMatch"), _string(request, "ifNoneMatch")
        ),
    )
    if_none_exist = _string(request, "ifNoneExist")
    if if_none_exist is not None:
        entry.if_none_exist = if_none_exist_criteria(if_none_exist)
    _check_request(entry, raw.get("resource"), validated)
    return entry


def _string(request: JSONObject, key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"request.{key} must be a string", expression=f"request.{key}")
    return value


def _split_url(url: str, base_url: str) -> tuple[str, Params]:
    """request.url: relative to the base, or absolute on this server's base."""
    if urlsplit(url).scheme:
        if not base_url or not url.startswith(base_url + "/"):
            raise BadRequest(f"request.url {url!r} is not on this server", expression="request.url")
        url = url[len(base_url) :]
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def _check_request(entry: Entry, resource: Any, validated: bool) -> None:
    """What each method needs (R4 http.html#transaction), and the resource validated."""
    kind, conditional = entry.target.kind, bool(entry.params)
    method = entry.method
    allowed = {
        "POST": kind == "type" and not conditional,
        "PUT": kind == "instance" or (kind == "type" and conditional),
        "PATCH": kind == "instance" or (kind == "type" and conditional),
        "DELETE": kind == "instance" or (kind == "type" and conditional),
        "GET": kind not in ("system-search", "type-search"),
        "HEAD": kind not in ("system-search", "type-search"),
    }
    if kind == "instance-operation":
        # Operations run outside a Bundle: ours call a video provider, which a
        # transaction's unit of work must never wait on (DESIGN.md "Side effects").
        raise NotSupported(f"{entry.url}: operations are not supported inside a Bundle")
    if not allowed[method]:
        raise BadRequest(f"{method} {entry.url} is not an interaction a Bundle can hold")
    if entry.target.id is not None:
        meta.check_id(entry.target.id)
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise BadRequest(f"A {method} entry needs a resource", expression="resource")
        if not validated:
            validate(resource, entry.resource_type)
        if method == "PUT" and kind == "instance":
            check_body_id(resource, entry.target.id or "")
        entry.resource = resource
    elif method == "PATCH":
        entry.patcher = entry_patcher(resource)
        if resource.get("resourceType") == "Parameters":
            entry.patch_parameters = resource


async def _run(
    unit: UnitOfWork, context: WriteContext, entries: list[Entry], options: ReadOptions
) -> dict[int, EntryResult]:
    ordered = sorted(entries, key=lambda e: _ORDER[e.method])
    for entry in ordered:
        await _guarded(entry, _resolve(unit, entry, ordered))
    targets = _targets(ordered)
    for entry in ordered:
        for document in (entry.resource, entry.patch_parameters):
            if document is not None:
                await _guarded(entry, _rewrite(unit, entry, document, targets, ordered))
    _check_overlaps(ordered)
    await _read_current(unit, ordered)
    results: dict[int, EntryResult] = {}
    for entry in ordered:
        step = _execute(unit, context, entry, results, options)
        results[entry.index] = await _guarded(entry, step)
    return results


async def _guarded(entry: Entry, step: Any) -> Any:
    try:
        return await step
    except FHIRError as exc:
        raise _at(exc, entry.index) from None


def _at(exc: FHIRError, index: int) -> FHIRError:
    """The same error, naming the entry it is about."""
    where = f"Bundle.entry[{index}]"
    issues = [
        Issue(
            f"{where}: {issue.diagnostics}",
            issue.code,
            issue.severity,
            f"{where}.{issue.expression}" if issue.expression else where,
        )
        for issue in exc.issues
    ]
    return FHIRError(f"{where}: {exc}", issues=issues, status=exc.status, headers=exc.headers)


async def _resolve(unit: UnitOfWork, entry: Entry, entries: list[Entry]) -> None:
    """Fill in the id the entry writes; for a create, also what ifNoneExist matched."""
    target, method = entry.target, entry.method
    if method in ("GET", "HEAD"):
        return
    if target.id is not None:
        entry.resource_id = target.id
    elif method == "POST":
        if entry.if_none_exist is not None:
            query = parse_criteria(entry.resource_type, entry.if_none_exist)
            found = await _stored_matches(unit, query, entries)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"Conditional create: ifNoneExist matches more than one {entry.resource_type}"
                )
            entry.existing = found[0] if found else None
            if entry.existing is None:
                entry.same_as = _created_earlier(entry, entries)
        entry.resource_id = (
            entry.existing.id
            if entry.existing
            else entry.same_as.resource_id
            if entry.same_as
            else meta.new_id()
        )
    elif method == "PUT":
        assert entry.resource is not None
        entry.resource_id = await crud.conditional_update_id(
            unit, entry.resource_type, entry.params, entry.resource
        )
    else:
        match = await crud.match_one(unit, entry.resource_type, entry.params, method.lower())
        if match is None and method == "PATCH":
            raise NotFound(f"Conditional patch: no {entry.resource_type} matches")
        entry.resource_id = match.id if match else None
    if entry.resource is not None and entry.resource_id is not None:
        entry.resource["id"] = entry.resource_id


async def _stored_matches(
    unit: UnitOfWork, query: SearchQuery, entries: list[Entry]
) -> list[Version]:
    """Up to two stored matches, leaving out what this Bundle deletes: its DELETEs
    come first (R4 http.html#trules), so later lookups must not find their targets."""
    deleted = {
        (entry.resource_type, entry.resource_id)
        for entry in entries
        if entry.method == "DELETE" and entry.resource_id is not None
    }
    found = await unit.match(query, limit=2 + len(deleted))
    return [v for v in found if (v.resource_type, v.id) not in deleted][:2]


def _created_earlier(entry: Entry, entries: list[Entry]) -> Entry | None:
    """An earlier create in this Bundle that the entry's ifNoneExist matches, so that
    two conditional creates of one thing make one resource."""
    assert entry.if_none_exist is not None
    query = parse_criteria(entry.resource_type, entry.if_none_exist)
    for other in _creates(entries, before=entry):
        if other.resource_type == entry.resource_type and _matches(query, other):
            return other
    return None


def _creates(entries: Iterable[Entry], before: Entry | None = None) -> Iterator[Entry]:
    """The entries that will create or replace a resource, in processing order."""
    for other in entries:
        if other is before:
            return
        if other.method in ("POST", "PUT") and other.writes and other.resource is not None:
            yield other


def _matches(query: SearchQuery, entry: Entry) -> bool:
    assert entry.resource is not None
    try:
        return matches(query, entry.resource)
    except NotSupported:
        # Chains and _has need stored resources; such criteria match only the store.
        return False


def _targets(entries: list[Entry]) -> dict[str, str]:
    """fullUrl (and, for an absolute RESTful fullUrl, its `Type/id` tail) -> `Type/id`."""
    targets: dict[str, str] = {}
    for entry in entries:
        if entry.full_url is None or entry.resource_id is None or entry.method == "DELETE":
            continue
        reference = f"{entry.resource_type}/{entry.resource_id}"
        targets[entry.full_url] = reference
        if "://" in entry.full_url:
            tail = "/".join(entry.full_url.rstrip("/").split("/")[-2:])
            if tail.split("/")[0] == entry.resource_type:
                targets.setdefault(tail, reference)
    return targets


async def _rewrite(
    unit: UnitOfWork,
    entry: Entry,
    document: JSONObject,
    targets: dict[str, str],
    entries: list[Entry],
) -> None:
    if rewrite_references(document, targets.get):
        entry.search_index = None
    for reference in references(document):
        value: str = reference["reference"]
        if is_placeholder(value):
            raise BadRequest(
                f"The reference {value!r} names no fullUrl in this Bundle",
                expression="resource",
            )
        if "?" in value and not value.startswith(("#", "http:", "https:")):
            reference["reference"] = await _conditional_reference(unit, value, entries)
            entry.search_index = None


async def _conditional_reference(unit: UnitOfWork, value: str, entries: list[Entry]) -> str:
    """`Type?criteria` -> `Type/id` of its single match, in the store or among this
    Bundle's creates (R4 http.html#trules: no match, or several, fails the Bundle)."""
    resource_type, _, query_string = value.partition("?")
    criteria = parse_qsl(query_string, keep_blank_values=True)
    try:
        query = parse_criteria(resource_type, criteria)
    except FHIRError as exc:
        raise BadRequest(f"Conditional reference {value!r}: {exc}") from None
    found = {version.id for version in await _stored_matches(unit, query, entries)}
    found |= {
        other.resource_id
        for other in _creates(entries)
        if other.resource_type == resource_type and other.resource_id and _matches(query, other)
    }
    if not found:
        raise BadRequest(f"Conditional reference {value!r} matches no resource")
    if len(found) > 1:
        raise PreconditionFailed(f"Conditional reference {value!r} matches more than one resource")
    return f"{resource_type}/{found.pop()}"


def _check_overlaps(entries: list[Entry]) -> None:
    """R4 http.html#trules: two entries may not write the same resource."""
    seen: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        if not entry.writes or entry.resource_id is None:
            continue
        key = (entry.resource_type, entry.resource_id)
        if key in seen:
            raise BadRequest(
                f"Bundle.entry[{seen[key].index}] and Bundle.entry[{entry.index}] both write "
                f"{key[0]}/{key[1]}",
                expression=f"Bundle.entry[{entry.index}]",
            )
        seen[key] = entry


async def _read_current(unit: UnitOfWork, entries: list[Entry]) -> None:
    """The current versions of everything updated, patched or deleted, in one read: no
    entry writes a resource another one reads (see _check_overlaps)."""
    updating = [
        entry
        for entry in entries
        if entry.method in ("PUT", "PATCH", "DELETE") and entry.resource_id is not None
    ]
    found = await unit.read_many([(e.resource_type, e.resource_id or "") for e in updating])
    for entry in updating:
        entry.current = found.get((entry.resource_type, entry.resource_id or ""))


async def _execute(
    unit: UnitOfWork,
    context: WriteContext,
    entry: Entry,
    done: dict[int, EntryResult],
    options: ReadOptions,
) -> EntryResult:
    method = entry.method
    if method in ("GET", "HEAD"):
        return await _read(unit, entry, options)
    resource_id = entry.resource_id
    if method == "DELETE":
        tombstone = await crud.delete_in(unit, context, entry.current, entry.preconditions)
        return EntryResult(entry, 204, tombstone)
    if entry.existing is not None:
        return EntryResult(entry, 200, entry.existing)
    if entry.same_as is not None:
        return EntryResult(entry, 200, done[entry.same_as.index].version)
    assert resource_id is not None
    if method == "PATCH":
        assert entry.patcher is not None
        written = await crud.patch_in(
            unit,
            context,
            entry.resource_type,
            resource_id,
            entry.current,
            entry.patcher,
            entry.preconditions,
        )
    elif method == "POST":
        assert entry.resource is not None
        written = await crud.write_new(
            unit, context, entry.resource, resource_id, entry.search_index
        )
    else:
        assert entry.resource is not None
        written = await crud.update_in(
            unit,
            context,
            entry.resource,
            resource_id,
            entry.current,
            entry.preconditions,
            entry.search_index,
        )
    return EntryResult(entry, 201 if written.created else 200, written.version)


async def _read(reader: Reader, entry: Entry, options: ReadOptions) -> EntryResult:
    target = entry.target
    if target.kind == "instance":
        assert target.resource_type is not None and target.id is not None
        version = await crud.read(reader, target.resource_type, target.id)
        # request.ifNoneMatch on a read: 304 when the client's copy is current.
        unchanged = entry.preconditions.none_match(version.version)
        return EntryResult(entry, 304 if unchanged else 200, version)
    if target.kind == "version":
        assert target.resource_type and target.id and target.version
        version = await crud.vread(reader, target.resource_type, target.id, target.version)
        return EntryResult(entry, 200, version)
    if target.kind in ("system-history", "type-history", "instance-history"):
        page = await history(
            reader,
            entry.params,
            resource_type=target.resource_type,
            resource_id=target.id,
            page_size=options.history_page_size,
            max_page_size=options.max_page_size,
            strict=options.strict,
        )
        return EntryResult(entry, 200, history=page)
    if target.kind == "metadata":
        raise NotSupported("Read the CapabilityStatement with GET [base]/metadata")
    types, criteria, compartment = _search_scope(entry)
    found = await search(
        reader,
        types,
        criteria,
        strict=options.strict,
        default_count=options.search_page_size,
        max_count=options.max_page_size,
        compartment=compartment,
        base_url=options.base_url,
    )
    return EntryResult(entry, 200, search=found)


def _search_scope(entry: Entry) -> tuple[tuple[str, ...], Params, tuple[str, str] | None]:
    target = entry.target
    if target.kind == "system":
        return (*system_scope(entry.params), None)
    if target.kind == "compartment":
        assert target.member_type and target.resource_type and target.id
        return (target.member_type,), entry.params, (target.resource_type, target.id)
    assert target.resource_type is not None
    return (target.resource_type,), entry.params, None
