"""The backend-neutral part of keyset paging (storage/paging.py, R4 search.html#paging):
one row read past the page, a backwards page turned round, the free total and the
cursors either side. The backends' paging is tested end to end in tests/search/api
(whose test_paging.py takes this module's natural name: test modules share one
namespace, there being no packages under tests/)."""

from __future__ import annotations

from fhirserver.search.cursor import decode_cursor, encode_cursor
from fhirserver.search.query import SearchQuery
from fhirserver.storage.paging import PageRequest


def _request(cursor: str | None = None, total: str = "none") -> PageRequest:
    return PageRequest.of(SearchQuery(("Patient",), count=2, cursor=cursor, total=total))


def test_first_page_reads_one_past_the_page() -> None:
    request = _request()
    assert (request.limit, request.after, request.backwards) == (3, None, False)
    page = request.page(["a", "b", "c"], lambda row: [row])
    assert page.rows == ["a", "b"] and page.more
    result = page.result([], [], None)
    assert result.total is None and result.previous_cursor is None
    assert result.next_cursor is not None and decode_cursor(result.next_cursor) == ("after", ["b"])


def test_a_first_page_holding_every_match_knows_its_total() -> None:
    page = _request().page(["a"], lambda row: [row])
    assert page.result([], [], None).total == 0  # the count of the matches handed in
    assert _request(total="accurate").counts_total


def test_a_backwards_page_is_turned_round_and_links_both_ways() -> None:
    request = _request(encode_cursor("before", ["d"]))
    assert request.backwards and request.after == ["d"]
    # Read in reverse sort order: c, b, then a past the page.
    page = request.page(["c", "b", "a"], lambda row: [row])
    assert page.rows == ["b", "c"]
    result = page.result([], [], None)
    assert result.total is None
    assert result.next_cursor is not None and decode_cursor(result.next_cursor) == ("after", ["c"])
    assert result.previous_cursor is not None
    assert decode_cursor(result.previous_cursor) == ("before", ["b"])


def test_the_last_page_has_no_next_link() -> None:
    page = _request(encode_cursor("after", ["b"])).page(["c"], lambda row: [row])
    result = page.result([], [], None)
    assert result.next_cursor is None and result.total is None
    assert result.previous_cursor is not None
