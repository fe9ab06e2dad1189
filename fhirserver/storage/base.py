"""The Store protocol every backend implements, and the data it speaks in.

A write is one unit: the new version (which is also the change-log entry, with its
monotonic sequence number), the pointer to the current version and the index entries
commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

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


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of a search: the matches in order, what `_include` / `_revinclude`
    brought in, the total if it was asked for or is known for free, and cursors."""

    matches: list[Version]
    included: list[Version]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None


class VersionConflict(Exception):
    """The version written is not the successor of the current one: another writer won."""


class Reader(Protocol):
    """What can be read: from the store, or inside a unit of work (seeing its writes)."""

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (possibly a deletion), or None if the resource never existed."""
        ...

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None: ...

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int]:
        """Matching versions, newest first, at most `query.count`, and how many match in
        all (ignoring the cursor), both read from one snapshot."""
        ...

    async def search(self, query: SearchQuery) -> SearchResult:
        """One page of matches, sorted, with includes; `query.cursor` names the page."""
        ...


class UnitOfWork(Reader, Protocol):
    """Reads and writes that commit together; reads see the unit's own writes."""

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        """The current versions of these (type, id) pairs; absent ones are left out."""
        ...

    async def match(self, query: SearchQuery, limit: int) -> list[Version]:
        """Matches of a query's criteria, unordered, at most `limit`."""
        ...

    async def write(self, version: Version, index: tuple[IndexEntry, ...]) -> None: ...

    async def set_index(
        self, resource_type: str, resource_id: str, index: tuple[IndexEntry, ...]
    ) -> None:
        """Replace the index entries of the current version (for a reindex)."""
        ...


class Store(Reader, Protocol):
    # True after open() when the search index must be rebuilt (an upgraded file).
    index_outdated: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def scan(self, after: tuple[str, str] | None, limit: int) -> list[Version]:
        """Current, non-deleted versions in (type, id) order, starting after `after`."""
        ...

    async def count(self) -> int:
        """How many current, non-deleted resources there are."""
        ...

    def unit_of_work(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """Exclusive, atomic: commits on normal exit, rolls back on an exception."""
        ...
