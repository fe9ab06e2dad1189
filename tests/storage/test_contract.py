"""The Store contract (DESIGN.md "The storage contract"): versions, tombstones, atomic
units of work, the change log's order, and history queries. Runs on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fhirserver.search.query import (
    IdPredicate,
    LastUpdatedPredicate,
    Predicate,
    SearchQuery,
    TokenEntry,
    TokenPredicate,
)
from fhirserver.storage.base import HistoryQuery, Store, UnitOfWork, Version, VersionConflict
from fhirserver.storage.retry import run_unit

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def version(rid: str, number: int, body: bytes | None = b"{}", minutes: int = 0) -> Version:
    method = "DELETE" if body is None else ("POST" if number == 1 else "PUT")
    return Version("Patient", rid, number, T0 + timedelta(minutes=minutes), method, body)


async def put(store: Store, *versions: Version, index: tuple[TokenEntry, ...] = ()) -> None:
    async with store.unit_of_work() as unit:
        for v in versions:
            await unit.write(v, index)


async def test_write_read_vread(store: Store) -> None:
    await put(store, version("a", 1, b'{"v":1}'))
    await put(store, version("a", 2, b'{"v":2}', minutes=1))
    current = await store.read("Patient", "a")
    assert current is not None and current.version == 2 and current.body == b'{"v":2}'
    assert current.last_updated == T0 + timedelta(minutes=1)
    first = await store.vread("Patient", "a", 1)
    assert first is not None and first.body == b'{"v":1}'
    assert await store.read("Patient", "missing") is None
    assert await store.vread("Patient", "a", 3) is None


async def test_tombstone_is_current(store: Store) -> None:
    await put(store, version("a", 1))
    await put(store, version("a", 2, None))
    current = await store.read("Patient", "a")
    assert current is not None and current.deleted and current.method == "DELETE"


async def test_version_must_follow_current(store: Store) -> None:
    await put(store, version("a", 1))
    with pytest.raises(VersionConflict):
        await put(store, version("a", 1))
    with pytest.raises(VersionConflict):
        await put(store, version("b", 2))
    current = await store.read("Patient", "a")
    assert current is not None and current.version == 1
    assert await store.read("Patient", "b") is None


async def test_failed_unit_of_work_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as unit:
            await unit.write(version("a", 1), (TokenEntry("identifier", "s", "1"),))
            # Reading flushes the write into the open transaction before the failure.
            assert await unit.read("Patient", "a") is not None
            raise RuntimeError("boom")
    assert await store.read("Patient", "a") is None
    assert await store.history(HistoryQuery(resource_type="Patient")) == ([], 0)
    assert (await store.history(HistoryQuery()))[0] == []


async def test_unit_of_work_reads_its_own_writes(store: Store) -> None:
    async with store.unit_of_work() as unit:
        await unit.write(version("a", 1), (TokenEntry("identifier", "s", "1"),))
        found = await unit.match(
            SearchQuery(("Patient",), ((TokenPredicate("identifier", "s", "1"),),)), limit=5
        )
        assert [v.id for v in found] == ["a"]


async def test_units_of_work_run_as_if_one_after_another(store: Store) -> None:
    """20 concurrent read-then-write units of one resource (run again when they lose a
    race, on a store whose units run concurrently): no update is lost."""

    async def bump(unit: UnitOfWork) -> None:
        current = await unit.read("Patient", "counter")
        number = current.version + 1 if current else 1
        await asyncio.sleep(0)
        await unit.write(version("counter", number), ())

    await asyncio.gather(*(run_unit(store, bump) for _ in range(20)))
    current = await store.read("Patient", "counter")
    assert current is not None and current.version == 20


async def test_change_log_order(store: Store) -> None:
    await put(store, version("a", 1), version("b", 1))
    await put(store, version("a", 2))
    log, total = await store.history(HistoryQuery(resource_type="Patient", count=10))
    assert total == 3
    assert [(v.id, v.version) for v in log] == [("a", 2), ("b", 1), ("a", 1)]
    seqs = [v.seq for v in log]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 3
    older, total = await store.history(
        HistoryQuery(resource_type="Patient", count=10, before_seq=seqs[0])
    )
    assert total == 3
    assert [(v.id, v.version) for v in older] == [("b", 1), ("a", 1)]


async def test_history_filters(store: Store) -> None:
    await put(store, version("a", 1, minutes=0), version("b", 1, minutes=5))
    await put(store, version("a", 2, minutes=10))
    since, _ = await store.history(HistoryQuery(since=T0 + timedelta(minutes=5)))
    assert {(v.id, v.version) for v in since} == {("b", 1), ("a", 2)}
    instance, _ = await store.history(HistoryQuery(resource_type="Patient", id="a"))
    assert [v.version for v in instance] == [2, 1]
    window = (T0 + timedelta(minutes=6), T0 + timedelta(minutes=7))
    at, _ = await store.history(HistoryQuery(id="a", at=window))
    assert [v.version for v in at] == [1]
    assert await store.history(HistoryQuery(resource_type="Observation")) == ([], 0)


async def test_search_tokens_and_dates(store: Store) -> None:
    await put(store, version("a", 1, minutes=0), index=(TokenEntry("identifier", "s", "1"),))
    await put(store, version("b", 1, minutes=60), index=(TokenEntry("identifier", None, "1"),))

    async def ids(*clauses: tuple[Predicate, ...]) -> list[str]:
        async with store.unit_of_work() as unit:
            return [v.id for v in await unit.match(SearchQuery(("Patient",), clauses), limit=10)]

    assert await ids((TokenPredicate("identifier", None, "1"),)) == ["a", "b"]
    assert await ids((TokenPredicate("identifier", "s", "1"),)) == ["a"]
    assert await ids((TokenPredicate("identifier", "", "1"),)) == ["b"]
    assert await ids((TokenPredicate("identifier", "s", None),)) == ["a"]
    assert await ids((IdPredicate(("b",)),)) == ["b"]
    hour = (T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))
    assert await ids((LastUpdatedPredicate("eq", *hour),)) == ["b"]
    assert await ids((LastUpdatedPredicate("lt", *hour),)) == ["a"]
    assert await ids((LastUpdatedPredicate("ne", *hour),)) == ["a"]
    # AND of clauses, OR within one.
    both = (IdPredicate(("a",)), IdPredicate(("b",)))
    assert await ids(both, (TokenPredicate("identifier", "s", "1"),)) == ["a"]


async def test_a_reindex_that_read_an_older_version_leaves_the_newer_index_alone(
    store: Store,
) -> None:
    """A reindex reads a batch, then sets each resource's entries in a unit of its own;
    a write in between already indexed the newer version, which must stay searchable."""

    async def ids(code: str) -> list[str]:
        query = SearchQuery(("Patient",), ((TokenPredicate("identifier", None, code),),))
        return [v.id for v in (await store.search(query)).matches]

    await put(store, version("a", 1), index=(TokenEntry("identifier", "s", "old"),))
    (read,) = await store.scan(None, 10)
    await put(store, version("a", 2, minutes=1), index=(TokenEntry("identifier", "s", "new"),))
    async with store.unit_of_work() as unit:
        await unit.set_index(read, (TokenEntry("identifier", "s", "old"),))
    assert await ids("new") == ["a"]
    assert await ids("old") == []
    current = await store.read("Patient", "a")
    assert current is not None
    async with store.unit_of_work() as unit:
        await unit.set_index(current, (TokenEntry("identifier", "s", "again"),))
    assert await ids("again") == ["a"]
    assert await ids("new") == []
