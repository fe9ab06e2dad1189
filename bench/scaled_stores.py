"""The stores the export bench reads, and the search bench at a scale (BENCH_SEARCH_SCALE):
the Synthea data 1x and `scale` times over, each built once and cached between runs
(building the 10x store takes minutes, exporting it well under one; the 100x store about
half an hour).

Each is `fhirserver import` of bench.load_scaled's NDJSON (every copy of the data under
new ids, references rewritten), so the two differ only in size. Cached beside the search
bench's store (bench.synthea.CACHE_DIR), keyed by the data and by the code that decides
what a store holds (bench.synthea.cache_key) and the generator; a store cached for other
code or data is removed when a new one is built.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import load_import, load_scaled, synthea
from bench.load_data import LoadBenchError, Survey


@dataclass(frozen=True, slots=True)
class ScaledStore:
    path: Path
    scale: int
    # Current (not deleted) resources: what a system-level export writes.
    current: int


def _key(survey: Survey) -> str:
    digest = hashlib.sha256(synthea.cache_key(synthea.bundle_files(survey.directory)).encode())
    digest.update((synthea.ROOT / "bench/load_scaled.py").read_bytes())
    return digest.hexdigest()[:16]


async def ready(survey: Survey, scale: int) -> ScaledStore:
    """The cached store of `scale` copies, built if there is none for this data and code."""
    synthea.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = synthea.CACHE_DIR / f"scaled-{_key(survey)}-{scale}x.sqlite"
    expected = scale * survey.distinct
    if not target.exists():
        print(f"bench: building the {scale}x store {target} (once; cached)", flush=True)
        building = target.with_name(f"building-{os.getpid()}-{target.name}")
        try:
            with tempfile.TemporaryDirectory(prefix="fhirserver-export-ndjson-") as scratch:
                await load_scaled.write(survey, Path(scratch), scale)
                await load_import.run(
                    f"import {scale}x",
                    [Path(scratch)],
                    building,
                    None,
                    resources=scale * survey.total,
                    current=expected,
                )
            building.replace(target)
        finally:
            for leftover in _files_of(building):
                leftover.unlink(missing_ok=True)
        _remove_stale(target, scale)
    found = load_import.count_current(target)
    if found != expected:
        raise LoadBenchError(f"the {scale}x store {target} holds {found} resources, not {expected}")
    return ScaledStore(target, scale, found)


def _files_of(database: Path) -> list[Path]:
    return [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]


def _remove_stale(keep: Path, scale: int) -> None:
    for old in synthea.CACHE_DIR.glob(f"scaled-*-{scale}x.sqlite"):
        if old != keep:
            for file in _files_of(old):
                file.unlink(missing_ok=True)
