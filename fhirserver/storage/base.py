"""The Store protocol every backend implements, and the data it speaks in.

A write is one unit: the new version (which is also the change-log entry, with its
monotonic sequence number), the pointer to the current version and the index entries
commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from fhirserver.search.query import IndexEntry, SearchQuery


@dataclass(frozen=True, slots=True)
class Version:
    """One version of one resource, as stored."""

    resource_type: str
    id: str
    version: int
    last_updated: datetime
    # The interaction that made it: POST, PUT, PATCH or DELETE.
    method: str
    # The resource's JSON; None for a deletion (a tombstone).
    body: bytes | None
    # Position in the store's change log; assigned on write, increasing, never reused.
    seq: int = 0

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    resource_type: str | None = None
    id: str | None = None
    # Versions written at or after this instant.
    since: datetime | None = None
    # Versions that were current at some point in [low, high).
    at: tuple[datetime, datetime] | None = None
    count: int = 50
    # Keyset cursor: only versions older (lower seq) than this.
    before_seq: int | None = None
    # Count every match as well (the history Bundle's `total`). A reader that only pages
    # (the bulk export) turns it off: the count reads every match on every page.
    with_total: bool = True


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of a search: the matches in order, what `_include` / `_revinclude`
    brought in, the total if it was asked for or is known for free, and cursors."""

    matches: list[Version]
    included: list[Version]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None
    # False when `_include` stopped at the query's `max_included` (search.html#include).
    included_complete: bool = True


@dataclass(frozen=True, slots=True)
class Job:
    """Work to do later, kept in the store so that it survives restarts: a retry, a
    no-show check, an export. `key` is unique within `kind`; putting a job with the same
    kind and key again replaces it, so recording an intent twice does it once.

    A worker claims a due job with a lease (`owner`, `lease_until`); if the worker dies,
    the lease runs out and another worker claims it (DESIGN.md "Scale-out")."""

    kind: str
    key: str
    due: datetime
    # What the job needs, as JSON; never a secret.
    payload: bytes = b"{}"
    attempts: int = 0
    owner: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """A small keyed record beside the resources: the authorization server's clients,
    users, codes, refresh tokens, revoked token ids and seen assertion ids. `key` is
    unique within `kind`; past `expires` (None: never) the record counts as absent."""

    kind: str
    key: str
    body: dict[str, Any]
    expires: datetime | None = None


class VersionConflict(Exception):
    """The version written is not the successor of the current one: another writer won."""


class Reader(Protocol):
    """What can be read: from the store, or inside a unit of work (seeing its writes)."""

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (possibly a deletion), or None if the resource never existed."""
        ...

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None: ...

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        """The current versions of these (type, id) pairs; absent ones are left out."""
        ...

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
        """Matching versions, newest first, at most `query.count`, and how many match in
        all (ignoring the cursor), both read from one snapshot; None for the count when
        `query.with_total` is off, or, on MongoDB, for the whole server's history
        (counting it would read every version on every page)."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """One page of matches, sorted, with includes; `query.cursor` names the page."""
        ...


class UnitOfWork(Reader, Protocol):
    """Reads and writes that commit together; reads see the unit's own writes."""

    async def match(self, query: SearchQuery, limit: int, decides: bool = True) -> list[Version]:
        """Matches of a query's criteria, unordered, at most `limit`. `decides`: the unit
        writes on what it found (a conditional create, update, patch or delete), so a
        concurrent unit deciding on the same criteria must not commit beside it; off
        for a lookup that writes nothing on its own (a conditional reference)."""
        ...

    async def write(self, version: Version, index: tuple[IndexEntry, ...]) -> None: ...

    async def set_index(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        """Replace the index entries of the resource with `index`, computed from
        `version`, if that is still its current version (for a reindex: a write since
        it read the resource indexed the newer version already)."""
        ...

    async def put_job(self, job: Job) -> None:
        """Record a job with the unit's writes (replacing one of the same kind and key)."""
        ...

    async def drop_job(self, kind: str, key: str) -> None:
        """Forget a job, if there is one, with the unit's writes."""
        ...


class Store(Reader, Protocol):
    # False: units of work are exclusive (SQLite). True: they run concurrently, and one
    # that loses a race with another raises `errors.Contention`, nothing written, to be
    # run again from its first read (storage/retry.py; MongoDB).
    concurrent_units: bool

    # True after open() when the search index must be rebuilt: an upgrade replaced its
    # layout, and no rebuild has finished since (one cut short is done again).
    index_outdated: bool

    async def open(self) -> None: ...

    async def index_rebuilt(self) -> None:
        """Record that every index entry was rebuilt (storage/reindex.py)."""
        ...

    async def close(self) -> None: ...

    async def scan(self, after: tuple[str, str] | None, limit: int) -> list[Version]:
        """Current, non-deleted versions in (type, id) order, starting after `after`."""
        ...

    async def count(self) -> int:
        """How many current, non-deleted resources there are."""
        ...

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Atomic: commits on normal exit, rolls back on an exception. Isolated as if
        units ran one after another: exclusive, or (`concurrent_units`) refused with
        `errors.Contention` when a concurrent unit wrote what this one read to decide
        (the current version it replaces, a conditional match) or writes."""
        ...

    async def changes(self, after_seq: int, limit: int) -> list[Version]:
        """The change log: versions with a sequence number above `after_seq`, in order,
        at most `limit`. A consumer that keeps the last number it handled misses
        nothing: a number becomes visible only after every lower one has."""
        ...

    async def settled_seq(self) -> int:
        """The bound of a snapshot of the change log: every version numbered at or
        below it is visible now, and every version written later is numbered above it."""
        ...

    async def claim_job(
        self, kinds: Sequence[str], owner: str, now: datetime, lease: timedelta
    ) -> Job | None:
        """Lease the job of one of `kinds` that has been due longest (`due <= now`) and
        that nobody holds, or whose lease ran out; None if there is none. Two owners
        never hold the same job at the same time."""
        ...

    async def finish_job(self, job: Job) -> bool:
        """Remove a claimed job; False (and nothing done) if the lease was lost, or the
        job was replaced by a newer put_job since it was claimed."""
        ...

    async def retry_job(self, job: Job, due: datetime) -> bool:
        """Give a claimed job back, due again at `due`, with one more attempt counted;
        False (and nothing done) if the lease was lost or the job was replaced."""
        ...

    # Keyed records (DESIGN.md "Authorization"): each call is atomic on its own, in this
    # process and across processes sharing the store. None of them may be called
    # inside a unit of work. `body` is JSON (dicts, lists, strings, numbers, booleans).

    async def put_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None
    ) -> None:
        """Create or replace the record."""
        ...

    async def get_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        """The body, or None when absent or expired at `now`."""
        ...

    async def list_records(self, kind: str, now: datetime) -> list[Record]:
        """The unexpired records of a kind, by key."""
        ...

    async def delete_record(
        self, kind: str, key: str, only_if: dict[str, Any] | None = None
    ) -> bool:
        """Remove the record; False if there was none (expired ones count as present)
        or, given `only_if`, its body is another (and then nothing is removed): how the
        holder of a lock lets go of its own lock and never of a later holder's."""
        ...

    async def replace_record(
        self,
        kind: str,
        key: str,
        expected: dict[str, Any],
        body: dict[str, Any],
        expires: datetime | None,
        now: datetime,
    ) -> bool:
        """Compare-and-set: replace the record if it is unexpired at `now` and its body
        is `expected` (the same JSON, key order aside); False, and nothing written,
        otherwise. Of concurrent replaces expecting one body, one wins: how the holder
        of an expiring lock renews it, and finds out that it no longer holds it."""
        ...

    async def add_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None, now: datetime
    ) -> bool:
        """Insert if absent (an expired record is absent and replaced); False, and
        nothing written, if an unexpired one is there. Of two concurrent adds of one
        key, one wins: how a `jti` is refused the second time."""
        ...

    async def take_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        """Read and delete in one step: of two concurrent takes of one key, exactly one
        gets the body (one-time authorization codes, refresh-token rotation)."""
        ...
