"""What is particular to the SQLite backend (DESIGN.md "The storage contract"): a writer
held up by another process answers 503 rather than failing, a failed COMMIT never leaves
the writer inside a transaction, and the store is a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import Unavailable
from fhirserver.storage.base import Job, Version
from fhirserver.storage.reindex import rebuild_outdated
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.storage.sqlite.store import CHECKPOINT_SECONDS, _SqliteUnitOfWork, _WriteGroup

NOW = datetime(2024, 1, 1, tzinfo=UTC)


async def test_locked_by_another_process_is_503(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path, busy_timeout_ms=50)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable) as caught:
            async with store.unit_of_work() as unit:
                await unit.write(Version("Patient", "a", 1, NOW, "POST", b"{}"), ())
        assert caught.value.status == 503 and caught.value.headers["Retry-After"]
        other.execute("ROLLBACK")
        async with store.unit_of_work() as unit:
            await unit.write(Version("Patient", "a", 1, NOW, "POST", b"{}"), ())
        assert await store.read("Patient", "a") is not None
    finally:
        other.close()
        await store.close()


class _CommitFails:
    """A connection whose COMMIT fails and leaves the transaction open, as SQLITE_BUSY,
    SQLITE_FULL or a deferred constraint can."""

    def __init__(self) -> None:
        self.in_transaction = False
        self.statements: list[str] = []

    def execute(self, sql: str, *args: Any) -> Any:
        self.statements.append(sql.split()[0])
        if sql == "BEGIN IMMEDIATE":
            self.in_transaction = True
        elif sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        elif sql == "ROLLBACK":
            self.in_transaction = False
        return self

    def fetchone(self) -> None:
        return None

    @property
    def lastrowid(self) -> int:
        return 1


async def test_failed_commit_rolls_back(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "f.sqlite"))
    unit = _SqliteUnitOfWork(store)
    connection = _CommitFails()
    unit._pending.append((Version("Patient", "a", 1, NOW, "POST", b"{}"), ()))
    unit.release(connection)  # type: ignore[arg-type]
    store._commit_group(connection)  # type: ignore[arg-type]
    assert unit.group is not None
    with pytest.raises(sqlite3.OperationalError):
        unit.group.committed.result()
    assert connection.statements[-1] == "ROLLBACK"
    assert not connection.in_transaction


async def test_a_claim_that_finds_no_job_leaves_the_write_lock_alone(tmp_path: Path) -> None:
    """The job runner looks for work after every write; most looks find none. They are
    made on a reader, so they neither wait for another process's write lock (workers)
    nor take it; a job that is due is still claimed on the writer."""
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path, busy_timeout_ms=2000)
    await store.open()
    async with store.unit_of_work() as unit:
        await unit.put_job(Job("later", "k", NOW + timedelta(hours=1), b"{}"))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert await store.claim_job(["later", "none"], "w", NOW, timedelta(minutes=1)) is None
        assert time.monotonic() - started < 1.0
        other.execute("ROLLBACK")
        claimed = await store.claim_job(["later"], "w", NOW + timedelta(hours=2), timedelta(1))
        assert claimed is not None and claimed.key == "k"
    finally:
        other.close()
        await store.close()


def test_memory_database_is_refused() -> None:
    # Each reader connection would open its own empty in-memory database.
    with pytest.raises(ValueError):
        SqliteStore(":memory:")


async def test_the_store_is_a_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "f.sqlite"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_older_file_gets_fresh_index_tables(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    store = SqliteStore(str(path))
    await store.open()
    assert store.index_outdated is False
    async with store.unit_of_work() as unit:
        await unit.write(Version("Patient", "a", 1, NOW, "POST", b"{}"), ())
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 1")
    upgraded = SqliteStore(str(path))
    await upgraded.open()
    try:
        assert upgraded.index_outdated is True
        assert await upgraded.read("Patient", "a") is not None
    finally:
        await upgraded.close()


async def test_a_rebuild_cut_short_is_done_again_at_the_next_open(tmp_path: Path) -> None:
    """The schema version is written when the rebuild is done, not when the tables are
    replaced: a server killed while it rebuilt finds the index outdated when it starts
    again, rather than serving searches from a partial index for good."""
    path = tmp_path / "f.sqlite"
    body = b'{"resourceType":"Patient","id":"a","name":[{"family":"Rebuilt"}]}'
    store = SqliteStore(str(path))
    await store.open()
    async with store.unit_of_work() as unit:
        await unit.write(Version("Patient", "a", 1, NOW, "POST", body), ())
    await store.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 1")
    for _ in range(2):  # opened, and closed without a rebuild (killed)
        cut_short = SqliteStore(str(path))
        await cut_short.open()
        await cut_short.close()
        assert cut_short.index_outdated is True
    rebuilt = SqliteStore(str(path))
    await rebuilt.open()
    try:
        assert await rebuild_outdated(rebuilt) is True
    finally:
        await rebuilt.close()
    current = SqliteStore(str(path))
    await current.open()
    await current.close()
    assert current.index_outdated is False
    with sqlite3.connect(path) as connection:
        names = connection.execute("SELECT norm FROM idx_string WHERE param = 'family'")
        assert names.fetchall() == [("rebuilt",)]


# Group commit (issue 18 point 3): units of work queued for the writer share one
# transaction, each in its own savepoint.


def _commits(store: SqliteStore) -> list[str]:
    """The COMMITs the store's writer connection runs from now on."""
    seen: list[str] = []
    store._writer.set_trace_callback(
        lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None
    )
    return seen


async def _create(store: SqliteStore, n: int) -> None:
    """Patient pn in a unit of work of its own."""
    async with store.unit_of_work() as unit:
        await unit.write(Version("Patient", f"p{n}", 1, NOW, "POST", b"{}"), ())


@asynccontextmanager
async def _writer_busy(store: SqliteStore, queued: int) -> AsyncIterator[None]:
    """Hold the writer thread until `queued` jobs wait for it: units of work started in
    the block queue their writes behind it, as under load, and form one group."""
    go = threading.Event()
    held = store._send(lambda _: go.wait(10))
    try:
        yield
        for _ in range(1000):
            if store._queued >= queued:
                break
            await asyncio.sleep(0.001)
        assert store._queued >= queued
    finally:
        go.set()
        await held


def _visible(path: str, resource_id: str) -> bool:
    """Whether another connection (another process, after a crash) sees the resource."""
    with sqlite3.connect(path) as other:
        found = other.execute(
            "SELECT 1 FROM resources WHERE type = 'Patient' AND id = ?", (resource_id,)
        ).fetchone()
    return found is not None


async def test_queued_units_share_one_commit_and_return_after_it(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()
    commits = _commits(store)
    seen_at_return: dict[str, bool] = {}

    async def create(n: int) -> None:
        await _create(store, n)
        seen_at_return[f"p{n}"] = _visible(path, f"p{n}")

    try:
        async with _writer_busy(store, queued=16):
            tasks = [asyncio.create_task(create(n)) for n in range(16)]
        await asyncio.gather(*tasks)
    finally:
        await store.close()
    # Acknowledged only once committed: each unit's write is on disk when it returns.
    assert seen_at_return == {f"p{n}": True for n in range(16)}
    assert commits == ["COMMIT"]


async def test_a_failing_unit_rolls_back_alone_and_the_group_commits(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()
    commits = _commits(store)

    async def create(n: int) -> str:
        async with store.unit_of_work() as unit:
            await unit.write(Version("Patient", f"p{n}", 1, NOW, "POST", b"{}"), ())
            if n == 3:
                # Written and flushed (a read inside the unit), then the unit fails.
                await unit.read("Patient", f"p{n}")
                raise ValueError("the unit's own failure")
            if n == 5:
                # Version 2 of a resource that has none: refused at the write.
                await unit.write(Version("Patient", "ghost", 2, NOW, "PUT", b"{}"), ())
        return "ok"

    try:
        # Units 0 to 2 queue their writes, and unit 3 its read, behind the held writer.
        async with _writer_busy(store, queued=4):
            tasks = [asyncio.create_task(create(n)) for n in range(10)]
        answers = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await store.close()
    assert [type(a).__name__ for a in answers] == [
        *["str"] * 3,
        "ValueError",
        "str",
        "VersionConflict",
        *["str"] * 4,
    ]
    assert [n for n in range(10) if _visible(path, f"p{n}")] == [0, 1, 2, 4, 6, 7, 8, 9]
    assert not _visible(path, "ghost")
    assert len(commits) < 8, commits  # the others did share commits


async def test_a_failed_group_commit_fails_every_unit_of_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()
    commit = _WriteGroup.commit

    def full_disk(self: _WriteGroup, connection: sqlite3.Connection) -> None:
        if self.units > 1:
            connection.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        commit(self, connection)

    monkeypatch.setattr(_WriteGroup, "commit", full_disk)

    def create(n: int) -> Coroutine[Any, Any, None]:
        return _create(store, n)

    try:
        async with _writer_busy(store, queued=8):
            tasks = [asyncio.create_task(create(n)) for n in range(8)]
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        # The writer is usable afterwards.
        await create(99)
    finally:
        await store.close()
    # One group of eight formed, and its commit failed.
    assert all(isinstance(a, sqlite3.OperationalError) for a in answers), answers
    assert not any(_visible(path, f"p{n}") for n in range(8))
    assert _visible(path, "p99")


async def test_a_unit_cancelled_while_it_commits_its_group_fails_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit's request cancelled while its group commits (a client gone): the other
    units are still told the truth, committed."""
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()
    commit = _WriteGroup.commit
    committing = threading.Event()

    def slow(self: _WriteGroup, connection: sqlite3.Connection) -> None:
        if self.units > 1:
            committing.set()
            time.sleep(0.3)
        commit(self, connection)

    monkeypatch.setattr(_WriteGroup, "commit", slow)

    def create(n: int) -> Coroutine[Any, Any, None]:
        return _create(store, n)

    try:
        async with _writer_busy(store, queued=4):
            tasks = [asyncio.create_task(create(n)) for n in range(4)]
        assert await asyncio.to_thread(committing.wait, 10)
        tasks[-1].cancel()
        answers = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await store.close()
    assert answers[:3] == [None, None, None], answers
    assert all(_visible(path, f"p{n}") for n in range(4))


async def test_a_transaction_sqlite_rolled_back_fails_its_whole_group(tmp_path: Path) -> None:
    """SQLite rolls a transaction back by itself on some errors (SQLITE_FULL, IOERR):
    every unit of the group lost its writes and is told so; units after it write in a
    transaction of their own."""
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()

    async def create(n: int) -> str:
        async with store.unit_of_work() as unit:
            await unit.write(Version("Patient", f"p{n}", 1, NOW, "POST", b"{}"), ())
            if n == 1:
                await unit.read("Patient", "p1")
                # As SQLite does on a full disk: the whole transaction is gone.
                await store._on_writer(lambda c: c.execute("ROLLBACK"))
                raise OSError("database or disk is full")
        return "ok"

    try:
        # Unit 0 writes in the group, unit 1 reads in it, behind the held writer.
        async with _writer_busy(store, queued=2):
            tasks = [asyncio.create_task(create(n)) for n in range(4)]
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        assert not store._writer.in_transaction
    finally:
        await store.close()
    assert [type(a).__name__ for a in answers] == ["OperationalError", "OSError", "str", "str"]
    assert [n for n in range(4) if _visible(path, f"p{n}")] == [2, 3]


async def test_close_commits_an_open_group(tmp_path: Path) -> None:
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()

    def create(n: int) -> Coroutine[Any, Any, None]:
        return _create(store, n)

    async with _writer_busy(store, queued=3):
        tasks = [asyncio.create_task(create(n)) for n in range(3)]
    closing = asyncio.create_task(store.close())
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [None] * 3
    await closing
    assert all(_visible(path, f"p{n}") for n in range(3))


def _in_the_database_file(path: str) -> int:
    """Versions in the database file itself, the WAL left unread (`immutable`): what
    checkpoints have copied there."""
    connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM versions").fetchone()
        return int(count)
    except sqlite3.OperationalError:  # not even the tables are in it yet
        return 0
    finally:
        connection.close()


async def _copied(path: str, versions: int) -> bool:
    deadline = time.monotonic() + 5
    # Another thread writes the file, and tells no one: poll it.
    while _in_the_database_file(path) < versions and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    return _in_the_database_file(path) == versions


async def test_commits_are_checkpointed_beside_the_writer(tmp_path: Path) -> None:
    # A few commits are far from the writer's own checkpoint (10,000 pages of WAL):
    # only the checkpoint thread copies them into the database file, at most once a
    # second.
    path = str(tmp_path / "f.sqlite")
    store = SqliteStore(path)
    await store.open()
    try:
        await _create(store, 0)
        assert await _copied(path, 1)
        await asyncio.sleep(CHECKPOINT_SECONDS)
        await _create(store, 1)
        assert await _copied(path, 2)
    finally:
        await store.close()
