"""bench/export_run.py and bench/export_floor.py (issue 14 point 5, Bulk Data IG 2.0.0
export.html): the bench's export writes every current resource of a store, a deleted one
left out and an updated one once, and its floor copies as many stored JSON rows."""

from __future__ import annotations

from pathlib import Path

from bench.export_floor import copy
from bench.export_run import export, sqlite_peak_kib
from fhirserver.bulk.importer import AS_RECORDED
from fhirserver.interactions import crud
from fhirserver.storage.sqlite import SqliteStore


def _patient(n: int, family: str = "Bench") -> dict[str, object]:
    return {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": family}]}


async def _fill(path: Path) -> None:
    store = SqliteStore(str(path))
    await store.open()
    try:
        for n in range(5):
            await crud.update(store, AS_RECORDED, "Patient", f"p{n}", _patient(n))
        await crud.update(store, AS_RECORDED, "Patient", "p0", _patient(0, "Again"))
        await crud.delete(store, AS_RECORDED, "Patient", "p4")
    finally:
        await store.close()


async def test_the_bench_export_and_its_floor_write_each_current_resource_once(
    tmp_path: Path,
) -> None:
    store = tmp_path / "fhir.sqlite"
    await _fill(store)
    (tmp_path / "out").mkdir()
    written, seconds, size, start_kib, threads = await export(store, tmp_path / "out")
    assert written == 4 and seconds > 0 and size > 0 and start_kib > 0 and threads >= 2
    # SQLite's heap high-water, which the bench prints beside the peak RSS.
    peak = sqlite_peak_kib()
    assert peak is None or peak > 0
    # The export's files are removed after counting: the cached store stays reusable.
    assert list((tmp_path / "out").iterdir()) == []
    lines, _ = copy(store, tmp_path / "floor.ndjson")
    assert lines == 4
    assert (tmp_path / "floor.ndjson").read_bytes().count(b"\n") == 4
