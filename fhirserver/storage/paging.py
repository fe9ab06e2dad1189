"""Keyset paging of search results (R4 search.html#paging; DESIGN.md "Search"): the part
every backend shares. A cursor names the sort keys of a page boundary; the backend reads
one row past the page (to learn whether another page follows) in its own query
language, between `PageRequest.of` and `Page.result`; a page read backwards (the one
before a cursor) is turned round; the total is counted when `_total` asks, and known
for free when the first page holds every match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fhirserver.search.cursor import decode_cursor, encode_cursor
from fhirserver.search.query import SearchQuery
from fhirserver.storage.base import SearchResult, Version

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page a search asks for."""

    count: int
    # The sort keys of the boundary the page starts from (excluded); None for the first.
    after: list[Any] | None
    # The page before the boundary: the backend reads in reverse sort order.
    backwards: bool
    # `_total` other than "none": the backend counts every match.
    counts_total: bool

    @classmethod
    def of(cls, query: SearchQuery) -> PageRequest:
        direction, after = decode_cursor(query.cursor) if query.cursor else ("after", None)
        return cls(query.count, after, direction == "before", query.total != "none")

    @property
    def limit(self) -> int:
        """How many rows to read: one past the page tells whether another follows."""
        return self.count + 1

    def page(self, rows: list[R], keys: Callable[[R], list[Any]]) -> Page[R]:
        """The page within the rows read, in sort order, with each row's sort keys."""
        more = len(rows) > self.count
        rows = rows[: self.count]
        if self.backwards:
            rows.reverse()
        return Page(self, rows, [keys(row) for row in rows], more)


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    request: PageRequest
    # The backend's rows of the page, in sort order, and their sort keys.
    rows: list[R]
    keys: list[list[Any]]
    # Rows lie beyond the page in the direction it was read.
    more: bool

    def result(
        self,
        matches: list[Version],
        included: list[Version],
        total: int | None,
        included_complete: bool = True,
    ) -> SearchResult:
        """The page as a result; `total` is the count of all matches when the request
        counts them, else None."""
        request = self.request
        if total is None and request.after is None and not self.more:
            # The first page holds every match: the total is known without counting.
            total = len(matches)
        # Reading forwards, what lies beyond is later; reading backwards, the boundary
        # the request started from is.
        later = request.after is not None if request.backwards else self.more
        earlier = self.more if request.backwards else request.after is not None
        return SearchResult(
            matches,
            included,
            total,
            encode_cursor("after", self.keys[-1]) if later and self.keys else None,
            encode_cursor("before", self.keys[0]) if earlier and self.keys else None,
            included_complete,
        )
