"""Issue 20, finding 2: searches have a time limit on every backend, and reads by id
never wait behind searches (R4 search.html; OperationOutcome IssueType `too-costly`).

SQLite stops a search's statements from a progress handler; MongoDB gets maxTimeMS on
each query of a search or history page (the mongomock adapter plays a server on which
every query takes `query_ms` and fails past its maxTimeMS).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirserver.errors import TooCostly
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import HistoryQuery, Store, Version
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.sqlite import store as sqlite_store
from fhirserver.storage.sqlite.store import SqliteStore
from tests.mongomock_async import AsyncMockClient

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def fill(store: Store, count: int) -> None:
    async with store.unit_of_work() as unit:
        for n in range(count):
            await unit.write(Version("Patient", f"p{n}", 1, T0, "POST", b"{}"), ())


def make_slow(store: Store) -> None:
    """Searches on `store` take longer than its limit from now on."""
    if isinstance(store, MongoStore):
        client: AsyncMockClient = store._given_client  # type: ignore[assignment]
        client.query_ms = 50
        store.search_timeout = 0.01
    else:
        assert isinstance(store, SqliteStore)
        # Gone at the first look at the deadline, which comes every 100 SQLite steps.
        store.search_timeout = 1e-6
        store.progress_steps = 100


async def test_a_search_past_the_limit_is_too_costly(store: Store) -> None:
    await fill(store, 2000)
    query = parse_search(("Patient",), [("_total", "accurate")])
    assert (await store.search(query)).total == 2000
    limit = store.search_timeout  # type: ignore[attr-defined]
    make_slow(store)
    with pytest.raises(TooCostly) as stopped:
        await store.search(query)
    assert stopped.value.status == 503 and stopped.value.code == "too-costly"
    with pytest.raises(TooCostly):
        await store.history(HistoryQuery(resource_type="Patient", count=10, with_total=True))
    if isinstance(store, SqliteStore):
        # Reads by id are not searches: no limit (on MongoDB every query has one; this
        # mock makes every query as slow, where a read by id takes a millisecond).
        assert await store.read("Patient", "p1") is not None
    # The store goes on, and sees writes made after the stopped search (a search
    # stopped inside its read transaction does not leave the connection in it).
    if isinstance(store, MongoStore):
        store._given_client.query_ms = 0  # type: ignore[union-attr]
    store.search_timeout = limit  # type: ignore[attr-defined]
    await fill_more(store)
    assert (await store.search(query)).total == 2001


async def fill_more(store: Store) -> None:
    async with store.unit_of_work() as unit:
        await unit.write(Version("Patient", "late", 1, T0, "POST", b"{}"), ())


async def test_a_conditional_match_past_the_limit_fails_its_unit(store: Store) -> None:
    """A conditional write's match (http.html#ccreate) is a search the writer waits
    for: held to the same limit, and its unit of work rolled back."""
    await fill(store, 2000)
    limit = store.search_timeout  # type: ignore[attr-defined]
    make_slow(store)
    query = parse_search(("Patient",), [("name:missing", "false")])
    with pytest.raises(TooCostly):
        async with store.unit_of_work() as unit:
            await unit.write(Version("Patient", "lost", 1, T0, "POST", b"{}"), ())
            await unit.match(query, limit=2)
    if isinstance(store, MongoStore):
        store._given_client.query_ms = 0  # type: ignore[union-attr]
    store.search_timeout = limit  # type: ignore[attr-defined]
    assert await store.read("Patient", "lost") is None
    await fill_more(store)
    assert await store.read("Patient", "late") is not None


async def test_every_query_of_a_mongodb_search_has_a_time_limit() -> None:
    client = AsyncMockClient()
    store = MongoStore("mongodb://mongomock/fhirserver", client=client)  # type: ignore[arg-type]
    await store.open()
    await fill(store, 5)
    client.time_limits.clear()
    query = parse_search(
        ("Patient",), [("_total", "accurate"), ("_revinclude", "Observation:subject")]
    )
    await store.search(query)
    await store.history(HistoryQuery(resource_type="Patient", count=10, with_total=True))
    assert client.time_limits, "no query was made"
    assert all(limit == 30_000 for _, limit in client.time_limits), client.time_limits
    client.time_limits.clear()
    await store.read("Patient", "p1")
    await store.vread("Patient", "p1", 1)
    await store.read_many([("Patient", "p1")])
    await store.changes(0, 10)
    await store.scan(None, 10)
    assert client.time_limits, "no query was made"
    assert all(limit == 30_000 for _, limit in client.time_limits), client.time_limits


async def test_reads_by_id_do_not_wait_behind_searches(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight searches that each hold a search thread for a second: a read by id still
    answers at once (before, the four threads were shared and it waited ~2 s)."""
    store = SqliteStore(str(tmp_path / "s.sqlite"))
    await store.open()
    try:
        await fill(store, 1)
        slow_search = sqlite_store._search

        def search_slowly(connection: Any, query: Any, dense_rows: int) -> Any:
            time.sleep(1.0)
            return slow_search(connection, query, dense_rows)

        monkeypatch.setattr(sqlite_store, "_search", search_slowly)
        query = parse_search(("Patient",), [])
        searches = [asyncio.create_task(store.search(query)) for _ in range(8)]
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await store.read("Patient", "p0") is not None
        waited = time.monotonic() - started
        await asyncio.gather(*searches)
        assert waited < 0.5, f"a read by id waited {waited:.2f} s behind searches"
    finally:
        await store.close()
