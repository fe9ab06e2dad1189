"""What is particular to the SQLite backend (DESIGN.md "The storage contract"): a writer
held up by another process answers 503 rather than failing, a failed COMMIT never leaves
the writer inside a transaction, and the store is a real file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import Unavailable
from fhirserver.storage.base import Version
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.storage.sqlite.store import _SqliteUnitOfWork

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


def test_failed_commit_rolls_back(tmp_path: Path) -> None:
    unit = _SqliteUnitOfWork(SqliteStore(str(tmp_path / "f.sqlite")))
    connection = _CommitFails()
    unit._pending.append((Version("Patient", "a", 1, NOW, "POST", b"{}"), ()))
    with pytest.raises(sqlite3.OperationalError):
        unit.commit(connection)  # type: ignore[arg-type]
    assert connection.statements[-1] == "ROLLBACK"
    assert not connection.in_transaction


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
