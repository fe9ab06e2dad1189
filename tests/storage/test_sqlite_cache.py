"""Issue 20 point 8 (bounded memory): the SQLite page caches are the store's caches that
grow with the data read, one per connection (the writer and each reader thread); their
sizes come from the settings (FHIRSERVER_SQLITE_CACHE_KIB, _READER_CACHE_KIB)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhirserver.config import Settings
from fhirserver.storage.configured import open_store
from fhirserver.storage.sqlite import SqliteStore


def _cache_size(connection: sqlite3.Connection) -> int:
    size: int = connection.execute("PRAGMA cache_size").fetchone()[0]
    return size


async def test_page_cache_sizes_come_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "FHIRSERVER_STORE": str(tmp_path / "f.sqlite"),
            "FHIRSERVER_SQLITE_CACHE_KIB": "3000",
            "FHIRSERVER_SQLITE_READER_CACHE_KIB": "700",
        }
    )
    store = open_store(settings)
    assert isinstance(store, SqliteStore)
    await store.open()
    try:
        # A negative cache_size is in KiB (sqlite.org/pragma.html#pragma_cache_size).
        assert await store._on_writer(_cache_size) == -3000
        assert await store._on_reader(_cache_size) == -700
    finally:
        await store.close()


@pytest.mark.parametrize("name", ["sqlite_cache_kib", "sqlite_reader_cache_kib"])
def test_a_cache_size_is_positive(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({f"FHIRSERVER_{name.upper()}": "0"})
