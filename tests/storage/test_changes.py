"""The change log (DESIGN.md "The storage contract"): every version, in sequence order,
read page by page from a cursor the consumer keeps; a unit of work that rolls back adds
neither a change nor a job. Runs on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhirserver.storage.base import Job, Store, Version

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def version(rid: str, number: int, body: bytes | None = b"{}") -> Version:
    method = "DELETE" if body is None else ("POST" if number == 1 else "PUT")
    return Version("Patient", rid, number, T0 + timedelta(minutes=number), method, body)


async def put(store: Store, *versions: Version) -> None:
    async with store.unit_of_work() as unit:
        for v in versions:
            await unit.write(v, ())


async def test_changes_in_order_across_units(store: Store) -> None:
    await put(store, version("a", 1, b'{"v":1}'), version("b", 1))
    await put(store, version("a", 2, None))
    await put(store, version("c", 1))
    log = await store.changes(0, 10)
    assert [(v.id, v.version) for v in log] == [("a", 1), ("b", 1), ("a", 2), ("c", 1)]
    seqs = [v.seq for v in log]
    # Above 0, so that a consumer starting from 0 misses nothing.
    assert seqs == sorted(seqs) and len(set(seqs)) == 4 and seqs[0] > 0
    assert log[0] == await store.vread("Patient", "a", 1)
    assert log[0].body == b'{"v":1}' and log[0].last_updated == T0 + timedelta(minutes=1)
    assert log[2].deleted and log[2].method == "DELETE"


async def test_changes_page_from_a_cursor(store: Store) -> None:
    for n in range(5):
        await put(store, version(f"p{n}", 1))
    pages: list[list[str]] = []
    cursor = 0
    # A fixed number of pages: a cursor that does not advance fails rather than loops.
    for _ in range(4):
        page = await store.changes(cursor, 2)
        pages.append([v.id for v in page])
        cursor = page[-1].seq if page else cursor
    assert pages == [["p0", "p1"], ["p2", "p3"], ["p4"], []]
    everything = await store.changes(0, 10)
    assert await store.changes(everything[1].seq, 10) == everything[2:]
    assert await store.changes(everything[1].seq, 1) == everything[2:3]


async def test_changes_continue_after_later_writes(store: Store) -> None:
    await put(store, version("a", 1))
    (first,) = await store.changes(0, 10)
    await put(store, version("a", 2), version("b", 1))
    later = await store.changes(first.seq, 10)
    assert [(v.id, v.version) for v in later] == [("a", 2), ("b", 1)]


async def test_rolled_back_unit_leaves_no_change_and_no_job(store: Store) -> None:
    await put(store, version("a", 1))
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as unit:
            await unit.write(version("b", 1), ())
            await unit.put_job(Job("notify", "Patient/b", T0))
            # Reading flushes the unit's writes into its transaction before the failure.
            assert await unit.read("Patient", "b") is not None
            raise RuntimeError("boom")
    await put(store, version("c", 1))
    assert [v.id for v in await store.changes(0, 10)] == ["a", "c"]
    assert (
        await store.claim_job(["notify"], "w", T0 + timedelta(days=1), timedelta(hours=1)) is None
    )


async def test_the_settled_bound_covers_every_version_and_none_written_after(
    store: Store,
) -> None:
    """What an export's snapshot and a subscription's start rest on (export_snapshot.py)."""
    empty = await store.settled_seq()
    assert await store.changes(empty, 10) == []
    for n in range(37):
        await put(store, version(f"p{n}", 1))
    bound = await store.settled_seq()
    log = await store.changes(0, 1000)
    assert len(log) == 37 and all(v.seq <= bound for v in log)
    await put(store, version("later", 1))
    (later,) = await store.changes(bound, 10)
    assert later.id == "later" and later.seq > bound
