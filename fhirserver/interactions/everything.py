"""Patient `$everything` (R4 patient-operations.html#everything, OperationDefinition
Patient-everything): a patient's record, or every readable patient's, one page at a time.

What comes back: the resources in the patient's compartment (R4 CompartmentDefinition
patient, the same membership the search and the access policy use), then, one level
deep, the resources they reference that lie in no patient's compartment (Practitioner,
Organization, Location, Medication, ...). References to resources of compartment types
are not followed: those belong to some patient's record, this one's (already returned)
or another's (not this patient's to give).

Order and paging. Members come by (type, id), each type read with the store's own keyset
search sorted by `_id`; then the referenced resources by (type, id). A page's `next`
cursor names where it stopped: the type and the member search's own keyset cursor, or
in the referenced phase the list of referenced keys and the position in it. Keyset
positions stay put while others write, so paging neither repeats nor skips a resource
that is there throughout.

The referenced keys. Which resources the members reference, without repeats, is only
known after reading every member: the page on which the members end reads them once
(a scan of the compartment) and keeps the sorted keys in the store, as records of at
most `_KEYS_PER_RECORD` keys that expire after `REFERENCED_FOR` (a token in the cursor
names them). Each later page reads the record its position falls in and the resources
from there: its cost does not grow with the pages before it (it did, when every page
scanned all the members again: quadratic in the number of patients). Records that
expired are made again, by the same scan.

The snapshot. The first page takes the head of the store's change log (the highest
sequence number written); every later page returns each resource as it was at that
sequence number: a version written after it is replaced by the one current then (read
from the resource's history), and a resource created after it is left out. A sequence
number rather than a `lastUpdated` instant: it is the store's own commit order ("a
number becomes visible only after every lower one has", Store.changes), unique and
gap-tolerant, while instants come from clocks that can tie, or disagree between two
server processes. A resource deleted, or moved out of the compartment, after the first
page is not found by the later pages' searches (they see current index entries): it is
left out rather than returned from a deleted record.

Authorization (DESIGN.md "Authorization"): the patient is read as a read would (404 for
one the token may not read); each member search is confined to the token's reach, each
snapshot version and each referenced resource is checked one by one. Types the token
may not search are left out, as in a system search.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from fhirserver.auth.access import Access
from fhirserver.auth.compartment import PATIENT, membership, patient_ids
from fhirserver.auth.confine import confine, unrestricted
from fhirserver.auth.scopes import Interaction
from fhirserver.clock import Clock
from fhirserver.errors import BadRequest, Forbidden
from fhirserver.interactions import crud
from fhirserver.interactions.guard import shows
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.search import system_types
from fhirserver.resources import codec, meta
from fhirserver.resources.references import local_reference, references
from fhirserver.search.cursor import decode_cursor, encode_cursor
from fhirserver.search.params import patient_compartment
from fhirserver.search.query import (
    ID,
    LastUpdatedPredicate,
    Predicate,
    ReferencePredicate,
    SearchQuery,
    SortKey,
)
from fhirserver.search.time import date_range
from fhirserver.storage.base import HistoryQuery, Store, Version

# The inputs of the operation (extensions/OperationDefinition-Patient-everything.json),
# and the paging cursor of a `next` link.
PARAMETERS = frozenset({"_since", "_type", "_count", "_cursor"})
# How many members a scan for references reads per search.
_SCAN_PAGE = 500
_MEMBERS, _REFERENCED = "m", "r"
# The referenced keys of a paging: record kind, keys per record, and how long they last.
REFERENCED = "everything-referenced"
_KEYS_PER_RECORD = 1000
REFERENCED_FOR = timedelta(hours=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class EverythingRequest:
    """One call: whose record (None: every patient the token may read), `_since`,
    `_type` (None: every type), the page size and the page's cursor."""

    patient_id: str | None
    since: datetime | None = None
    types: frozenset[str] | None = None
    count: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class EverythingPage:
    """The compartment's resources on this page (search mode `match`), the referenced
    ones (mode `include`), and the cursor of the next page, if one follows."""

    members: list[Version]
    referenced: list[Version]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a page starts: the snapshot's sequence number, the phase (members, then
    referenced), and in the members phase the type and the member search's cursor
    ("" from the start); in the referenced phase the token of the referenced keys'
    records and the position in those keys."""

    bound: int
    phase: str
    resource_type: str
    within: str

    def encode(self) -> str:
        return encode_cursor("after", [self.bound, self.phase, self.resource_type, self.within])


def everything_request(
    patient_id: str | None, params: Sequence[tuple[str, str]], options: ReadOptions
) -> EverythingRequest:
    """The call's inputs (from a query string, or a Parameters body as text). An input
    the operation does not define is refused (R4 operations.html#executing)."""
    since: datetime | None = None
    types: set[str] | None = None
    count = options.search_page_size
    cursor: str | None = None
    for name, value in params:
        if name not in PARAMETERS:
            known = ", ".join(sorted(PARAMETERS - {"_cursor"}))
            raise BadRequest(
                f"$everything has no input parameter {name!r} (known: {known})", expression=name
            )
        if name == "_since":
            since = date_range(value, "_since")[0]
        elif name == "_type":
            types = (types or set()) | set(system_types([("_type", value)]))
        elif name == "_count":
            number = meta.whole_number(value)
            if number is None or number < 1:
                raise BadRequest(f"_count must be a positive whole number, not {value!r:.40}")
            count = min(number, options.max_page_size)
        else:
            cursor = value
    if patient_id is not None:
        meta.check_id(patient_id)
    frozen = frozenset(types) if types is not None else None
    return EverythingRequest(patient_id, since, frozen, count, cursor)


async def everything(
    store: Store, request: EverythingRequest, access: Access, clock: Clock
) -> EverythingPage:
    """One page of `Patient/[id]/$everything` (or `Patient/$everything` when
    `request.patient_id` is None), as `access` may see it."""
    if request.patient_id is not None:
        # As a read would: 404 for an unknown patient, or one outside the token's reach.
        await crud.read(store, PATIENT, request.patient_id, access)
    if request.cursor is not None:
        position = _decode(request.cursor)
    else:
        position = _Position(await store.settled_seq(), _MEMBERS, "", "")
    snapshot = _Snapshot(store, access, request.patient_id, position.bound)
    page = _PageBuilder(request.count)
    if position.phase == _MEMBERS:
        after = await _members(snapshot, request, position, page)
        if after is not None:
            return EverythingPage(page.members, [], after.encode())
        position = _Position(position.bound, _REFERENCED, uuid4().hex, "0")
    keys = _ReferencedKeys(snapshot, request, position.resource_type, clock)
    after = await _referenced(snapshot, request, keys, position, page)
    return EverythingPage(page.members, page.referenced, after.encode() if after else None)


# -- members ----------------------------------------------------------------------------


@dataclass
class _PageBuilder:
    """The page being filled, and how much room is left in it."""

    room: int
    members: list[Version] = field(default_factory=list)
    referenced: list[Version] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.room <= 0


def _member_types() -> list[str]:
    """Every type that can be in a patient's compartment, in order."""
    return sorted({PATIENT, *(name for name, params in patient_compartment().items() if params)})


async def _members(
    snapshot: _Snapshot, request: EverythingRequest, start: _Position, page: _PageBuilder
) -> _Position | None:
    """Fill the page with members from `start`; the position after the page if members
    may remain, else None."""
    wanted = [
        name
        for name in _member_types()
        if name >= start.resource_type and (request.types is None or name in request.types)
    ]
    for index, name in enumerate(wanted):
        within = start.within if name == start.resource_type else ""
        while True:
            if page.full:
                return _Position(start.bound, _MEMBERS, name, within)
            rows, following = await snapshot.members(name, within or None, page.room, request.since)
            page.members += rows
            page.room -= len(rows)
            if following is None:
                break
            within = following
        if page.full and index + 1 < len(wanted):
            return _Position(start.bound, _MEMBERS, wanted[index + 1], "")
    return None


async def _referenced(
    snapshot: _Snapshot,
    request: EverythingRequest,
    keys: _ReferencedKeys,
    start: _Position,
    page: _PageBuilder,
) -> _Position | None:
    """Fill the page with referenced resources from `start`; the position after the page
    if some may remain, else None."""
    if not start.within.isdigit():
        raise BadRequest("Invalid paging cursor", expression="_cursor")
    offset = int(start.within)
    while True:
        chunk, last = await keys.from_offset(offset)
        for name, resource_id in chunk:
            if page.full:
                return _Position(start.bound, _REFERENCED, start.resource_type, str(offset))
            version = await snapshot.referenced(name, resource_id, request.since)
            offset += 1
            if version is not None:
                page.referenced.append(version)
                page.room -= 1
        if last:
            return None


@dataclass(frozen=True, slots=True)
class _ReferencedKeys:
    """The sorted referenced keys of one paging, kept in the store under `token`: record
    n holds keys n*K .. n*K+K-1 (K = _KEYS_PER_RECORD) and whether it is the last."""

    snapshot: _Snapshot
    request: EverythingRequest
    token: str
    clock: Clock

    async def from_offset(self, offset: int) -> tuple[list[tuple[str, str]], bool]:
        """The keys from `offset` to the end of their record, and whether no record
        follows."""
        number, skip = divmod(offset, _KEYS_PER_RECORD)
        body = await self.snapshot.store.get_record(REFERENCED, self._key(number), self.clock())
        if body is None:
            await self._write()
            body = await self.snapshot.store.get_record(REFERENCED, self._key(number), self.clock())
        if body is None:
            return [], True  # past the end
        if body.get("patient") != (self.snapshot.patient_id or "") or body.get("bound") != (
            self.snapshot.bound
        ):
            raise BadRequest("Invalid paging cursor", expression="_cursor")
        keys = [(str(name), str(resource_id)) for name, resource_id in body["keys"]]
        return keys[skip:], bool(body["last"])

    async def _write(self) -> None:
        """Scan the members once and record their referenced keys."""
        types = self.request.types
        keys = [
            key for key in await self.snapshot.referenced_keys() if types is None or key[0] in types
        ]
        expires = self.clock() + REFERENCED_FOR
        count = max(1, -(-len(keys) // _KEYS_PER_RECORD))
        for number in range(count):
            part = keys[number * _KEYS_PER_RECORD : (number + 1) * _KEYS_PER_RECORD]
            body = {
                "patient": self.snapshot.patient_id or "",
                "bound": self.snapshot.bound,
                "keys": [list(key) for key in part],
                "last": number == count - 1,
            }
            await self.snapshot.store.put_record(REFERENCED, self._key(number), body, expires)

    def _key(self, number: int) -> str:
        return f"{self.token}:{number}"


# -- the snapshot -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Reads as of sequence number `bound`, confined to what `access` may see, of
    Patient `patient_id`'s compartment (None: any patient's)."""

    store: Store
    access: Access
    patient_id: str | None
    bound: int

    async def members(
        self, resource_type: str, cursor: str | None, count: int, since: datetime | None
    ) -> tuple[list[Version], str | None]:
        """One keyset page of the compartment's `resource_type` members, as of the
        snapshot, and the search's cursor of the next page (None: the type is done)."""
        clauses: list[tuple[Predicate, ...]] = []
        members = self._membership(resource_type)
        if members:
            clauses.append(members)
        if since is not None:
            clauses.append((LastUpdatedPredicate("ge", since, since + _MICROSECOND),))
        query = SearchQuery(
            (resource_type,), tuple(clauses), sort=(SortKey(ID),), count=count, cursor=cursor
        )
        if not unrestricted(self.access, Interaction.SEARCH, (resource_type,)):
            try:
                query = confine(query, self.access, Interaction.SEARCH)
            except Forbidden:
                return [], None  # a type the token may not search: left out
        result = await self.store.search(query)
        rows: list[Version] = []
        for current in result.matches:
            version = await self._as_of(current)
            # The search matched the current version, confined to the token's reach; an
            # older one from the snapshot is checked for both on its own content.
            if (
                version is not None
                and (version is current or self._visible_member(version))
                and (since is None or version.last_updated >= since)
            ):
                rows.append(version)
        return rows, result.next_cursor

    async def referenced_keys(self) -> list[tuple[str, str]]:
        """The (type, id) of every resource outside the patient compartments that a
        member the token may see references, in order."""
        member_types = set(_member_types())
        keys: set[tuple[str, str]] = set()
        for name in _member_types():
            cursor: str | None = None
            while True:
                rows, cursor = await self.members(name, cursor, _SCAN_PAGE, None)
                for row in rows:
                    assert row.body is not None
                    for link in references(codec.load_object(row.body)):
                        target = local_reference(link)
                        if target is None:
                            continue
                        target_type, _, target_id = target.partition("/")
                        if target_type not in member_types:
                            keys.add((target_type, target_id))
                if cursor is None:
                    break
        return sorted(keys)

    async def referenced(
        self, resource_type: str, resource_id: str, since: datetime | None
    ) -> Version | None:
        """A referenced resource as of the snapshot, if it was there and the token may
        read it (both as it is now and as it was)."""
        current = await self.store.read(resource_type, resource_id)
        if current is None or not shows(self.access, Interaction.READ, current):
            return None
        version = await self._as_of(current)
        if version is None or not shows(self.access, Interaction.READ, version):
            return None
        if since is not None and version.last_updated < since:
            return None
        return version

    async def _as_of(self, current: Version) -> Version | None:
        """The version that was current at the snapshot (None: none, or a deletion)."""
        if current.seq <= self.bound:
            return None if current.deleted else current
        query = HistoryQuery(
            resource_type=current.resource_type, id=current.id, count=1, before_seq=self.bound + 1
        )
        versions, _ = await self.store.history(query)
        if not versions or versions[0].deleted:
            return None
        return versions[0]

    def _membership(self, resource_type: str) -> tuple[Predicate, ...]:
        if self.patient_id is not None:
            return membership(resource_type, self.patient_id)
        if resource_type == PATIENT:
            return ()  # every Patient is in its own compartment
        params = patient_compartment().get(resource_type, ())
        return tuple(
            ReferencePredicate(param, PATIENT, None) for param in params if param != "{def}"
        )

    def _visible_member(self, version: Version) -> bool:
        """An older version (from before the snapshot) may have been in another
        compartment, or outside the token's reach: the current index said the resource
        is a member, the old content must say so too."""
        assert version.body is not None
        if not shows(self.access, Interaction.SEARCH, version):
            return False
        resource: dict[str, Any] = codec.load_object(version.body)
        patients = patient_ids(resource)
        return bool(patients) if self.patient_id is None else self.patient_id in patients


def _decode(cursor: str) -> _Position:
    direction, values = decode_cursor(cursor)
    match values:
        case [int(bound), str(phase), str(resource_type), str(within)] if (
            direction == "after" and phase in (_MEMBERS, _REFERENCED)
        ):
            return _Position(bound, phase, resource_type, within)
    raise BadRequest("Invalid paging cursor", expression="_cursor")
