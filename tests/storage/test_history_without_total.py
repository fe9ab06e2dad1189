"""History pages without a count (R4 http.html#history: `Bundle.total` is the history
Bundle's; a reader that only pages, the Bulk Data export of export.html, turns it off):
the same versions page by page, no total, on every backend, in or out of a unit of work."""

from __future__ import annotations

from dataclasses import replace

from fhirserver.storage.base import HistoryQuery, Store, Version
from tests.storage.test_contract import put, version


async def _pages(store: Store, query: HistoryQuery) -> tuple[list[list[Version]], set[int | None]]:
    pages: list[list[Version]] = []
    totals: set[int | None] = set()
    while True:
        versions, total = await store.history(query)
        totals.add(total)
        if not versions:
            return pages, totals
        pages.append(versions)
        query = replace(query, before_seq=versions[-1].seq)


async def test_paging_without_a_total_gives_the_same_versions_and_no_total(store: Store) -> None:
    for number in range(1, 4):
        await put(store, *(version(f"p{n}", number, minutes=number) for n in range(5)))
    counted = HistoryQuery(resource_type="Patient", count=4)
    with_total, totals = await _pages(store, counted)
    without_total, no_totals = await _pages(store, replace(counted, with_total=False))
    assert totals == {15}
    assert no_totals == {None}
    assert [[v.seq for v in page] for page in without_total] == [
        [v.seq for v in page] for page in with_total
    ]
    assert sum(len(page) for page in without_total) == 15


async def test_a_unit_of_work_reads_history_without_a_total(store: Store) -> None:
    await put(store, version("a", 1), version("b", 1))
    async with store.unit_of_work() as unit:
        newest, total = await unit.history(HistoryQuery(count=1, with_total=False))
    assert total is None
    assert [(v.id, v.version) for v in newest] == [("b", 1)]
