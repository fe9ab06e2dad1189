"""A transaction's entries resolved inside its unit of work, before anything is written
(R4 http.html#transaction, #trules). All lookups happen inside the unit, so a concurrent
transaction cannot slip in between lookup and write:
1. every write gets its resource id. Creates get new ids, or the match of their
   `ifNoneExist` (in the store, or an earlier create of this Bundle); conditional
   updates, patches and deletes get their match.
2. each reference to an entry's fullUrl (a `urn:uuid:` / `urn:oid:` placeholder, or the
   URL the resource had elsewhere) becomes `Type/id`; each conditional reference
   (`Organization?identifier=x|y`) becomes its single match.
3. no two entries may write the same resource.
Then the current versions of everything updated, patched or deleted are read at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import parse_qsl

from fhirserver.auth.confine import confine, unrestricted
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import BadRequest, FHIRError, NotFound, NotSupported, PreconditionFailed
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.transaction_entries import Entry, guarded
from fhirserver.resources import meta
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import is_placeholder, references, rewrite_references
from fhirserver.search.match import matches
from fhirserver.search.params import Registry
from fhirserver.search.parse import parse_criteria
from fhirserver.search.query import SearchQuery
from fhirserver.storage.base import UnitOfWork, Version


async def resolve(unit: UnitOfWork, context: WriteContext, ordered: list[Entry]) -> None:
    """Steps 1 to 3 for `ordered`, the entries in processing order; an error names its
    entry. Matches are looked up among what the writer's access may search, so a
    Bundle cannot learn of resources outside it."""
    for entry in ordered:
        await guarded(entry, _resolve(unit, context, entry, ordered))
    targets = _targets(ordered)
    for entry in ordered:
        for document in (entry.resource, entry.patch_parameters):
            if document is not None:
                await guarded(entry, _rewrite(unit, context, entry, document, targets, ordered))
    _check_overlaps(ordered)
    await _read_current(unit, ordered)


async def _resolve(
    unit: UnitOfWork, context: WriteContext, entry: Entry, entries: list[Entry]
) -> None:
    """Fill in the id the entry writes; for a create, also what ifNoneExist matched."""
    target, method = entry.target, entry.method
    if method in ("GET", "HEAD"):
        return
    if target.id is not None:
        entry.resource_id = target.id
    elif method == "POST":
        if entry.if_none_exist is not None:
            query = parse_criteria(entry.resource_type, entry.if_none_exist, context.known())
            found = await _stored_matches(unit, context, query, entries)
            if len(found) > 1:
                raise PreconditionFailed(
                    f"Conditional create: ifNoneExist matches more than one {entry.resource_type}"
                )
            entry.existing = found[0] if found else None
            if entry.existing is None:
                entry.same_as = _created_earlier(entry, entries, context.known())
        entry.resource_id = (
            entry.existing.id
            if entry.existing
            else entry.same_as.resource_id
            if entry.same_as
            else meta.new_id(context.clock())
        )
    elif method == "PUT":
        assert entry.resource is not None
        entry.resource_id = await crud.conditional_update_id(
            unit, context, entry.resource_type, entry.params, entry.resource
        )
    else:
        match = await crud.match_one(
            unit, context, entry.resource_type, entry.params, method.lower()
        )
        if match is None and method == "PATCH":
            raise NotFound(f"Conditional patch: no {entry.resource_type} matches")
        entry.resource_id = match.id if match else None
    if entry.resource is not None and entry.resource_id is not None:
        entry.resource["id"] = entry.resource_id


async def _stored_matches(
    unit: UnitOfWork,
    context: WriteContext,
    query: SearchQuery,
    entries: list[Entry],
    decides: bool = True,
) -> list[Version]:
    """Up to two stored matches, leaving out what this Bundle deletes: its DELETEs
    come first (R4 http.html#trules), so later lookups must not find their targets.
    `decides`: see UnitOfWork.match."""
    deleted = {
        (entry.resource_type, entry.resource_id)
        for entry in entries
        if entry.method == "DELETE" and entry.resource_id is not None
    }
    if not unrestricted(context.access, Interaction.SEARCH, query.resource_types):
        query = confine(query, context.access, Interaction.SEARCH)
    found = await crud.stored_matches(unit, context, query, 2 + len(deleted), decides)
    return [v for v in found if (v.resource_type, v.id) not in deleted][:2]


def _created_earlier(entry: Entry, entries: list[Entry], known: Registry | None) -> Entry | None:
    """An earlier create in this Bundle that the entry's ifNoneExist matches, so that
    two conditional creates of one thing make one resource."""
    assert entry.if_none_exist is not None
    query = parse_criteria(entry.resource_type, entry.if_none_exist, known)
    for other in _creates(entries, before=entry):
        if other.resource_type == entry.resource_type and _matches(query, other, known):
            return other
    return None


def _creates(entries: Iterable[Entry], before: Entry | None = None) -> Iterator[Entry]:
    """The entries that will create or replace a resource, in processing order."""
    for other in entries:
        if other is before:
            return
        if other.method in ("POST", "PUT") and other.writes and other.resource is not None:
            yield other


def _matches(query: SearchQuery, entry: Entry, known: Registry | None) -> bool:
    assert entry.resource is not None
    try:
        return matches(query, entry.resource, known=known)
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
    context: WriteContext,
    entry: Entry,
    document: JSONObject,
    targets: dict[str, str],
    entries: list[Entry],
) -> None:
    suspect = False

    def new_target(link: str) -> str | None:
        # Notes whether any link may be a placeholder left unresolved or a conditional
        # reference: only then is the document walked again for its references (most
        # documents have neither, and a walk costs about 15 us a Synthea resource).
        nonlocal suspect
        found = targets.get(link)
        if found is None and (is_placeholder(link) or "?" in link):
            suspect = True
        return found

    if rewrite_references(document, new_target):
        entry.search_index = None
    if not suspect:
        return
    for reference in references(document):
        value: str = reference["reference"]
        if is_placeholder(value):
            raise BadRequest(
                f"The reference {value!r} names no fullUrl in this Bundle",
                expression="resource",
            )
        if "?" in value and not value.startswith(("#", "http:", "https:")):
            reference["reference"] = await _conditional_reference(unit, context, value, entries)
            entry.search_index = None


async def _conditional_reference(
    unit: UnitOfWork, context: WriteContext, value: str, entries: list[Entry]
) -> str:
    """`Type?criteria` -> `Type/id` of its single match, in the store or among this
    Bundle's creates (R4 http.html#trules: no match, or several, fails the Bundle)."""
    resource_type, _, query_string = value.partition("?")
    criteria = parse_qsl(query_string, keep_blank_values=True)
    try:
        query = parse_criteria(resource_type, criteria, context.known())
    except FHIRError as exc:
        raise BadRequest(f"Conditional reference {value!r}: {exc}") from None
    # A lookup: the Bundle writes nothing because of it, so it takes no guard (two
    # Bundles referring to one Patient by identifier need not take turns).
    matched = await _stored_matches(unit, context, query, entries, decides=False)
    found = {version.id for version in matched}
    found |= {
        other.resource_id
        for other in _creates(entries)
        if (
            other.resource_type == resource_type
            and other.resource_id
            and _matches(query, other, context.known())
        )
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
