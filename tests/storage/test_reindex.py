"""`fhirserver reindex` (DESIGN.md "Search"): the index is rebuilt from the stored
resources, so a change of search definitions takes effect on old data too."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from fhirserver.interactions import crud
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.search import search
from fhirserver.storage.reindex import reindex
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.storage.sqlite.schema import INDEX_TABLES


def _wipe_index(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        for table, _ in INDEX_TABLES.values():
            connection.execute(f"DELETE FROM {table}")


async def _names(store: SqliteStore, name: str) -> list[str]:
    _, result = await search(
        store, ("Patient",), [("name", name), ("_count", "1000")], ReadOptions()
    )
    return sorted(v.id for v in result.matches)


async def test_reindex_rebuilds_what_was_lost(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    store = SqliteStore(str(path))
    await store.open()
    try:
        for n in range(1201):  # more than two batches
            await crud.update(
                store,
                WriteContext(),
                "Patient",
                f"p{n}",
                {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": f"Fam{n % 3}"}]},
            )
        await crud.delete(store, WriteContext(), "Patient", "p0")
        assert len(await _names(store, "fam1")) == 400
        _wipe_index(path)
        assert await _names(store, "fam1") == []
        seen: list[tuple[int, int]] = []
        assert await reindex(store, lambda done, total: seen.append((done, total))) == 1200
        assert seen[-1] == (1200, 1200) and len(seen) == 3
        assert len(await _names(store, "fam1")) == 400
    finally:
        await store.close()


def test_reindex_command(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    result = subprocess.run(
        [sys.executable, "-m", "fhirserver", "reindex", "--store", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"reindexed 0 resources in {path}" in result.stdout
