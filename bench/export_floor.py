"""The floor for bulk export: what it costs to read each current resource's stored JSON
from the same SQLite file and write it as a line to a file, with nothing else: no
snapshot, no parsing, no selection, no job.

It runs in a process of its own (`python -m bench.export_floor STORE OUT_FILE`) that
imports no fhirserver code, and reports its own peak RSS.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import child, rss
from bench.load_data import LoadBenchError

CURRENT_BODIES = (
    "SELECT v.body FROM resources r JOIN versions v ON v.seq = r.seq WHERE v.body IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class ExportFloor:
    resources: int
    seconds: float
    peak_kib: int

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds


def copy(store: Path, out_file: Path) -> tuple[int, float]:
    """Lines written and the seconds it took."""
    started = time.perf_counter()
    connection = sqlite3.connect(store)
    written = 0
    try:
        with out_file.open("wb") as out:
            for (body,) in connection.execute(CURRENT_BODIES):
                out.write(body)
                out.write(b"\n")
                written += 1
    finally:
        connection.close()
    return written, time.perf_counter() - started


async def measure(store: Path, out_file: Path, expected: int) -> ExportFloor:
    command = [sys.executable, "-m", "bench.export_floor", str(store), str(out_file)]
    async with child.started(command, stdout=child.PIPE) as process:
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise LoadBenchError(f"the export floor exited with status {process.returncode}")
    figures = orjson.loads(out.splitlines()[-1])
    floor = ExportFloor(figures["resources"], figures["seconds"], figures["peak_kib"])
    if floor.resources != expected:
        raise LoadBenchError(f"the export floor wrote {floor.resources} lines, not {expected}")
    return floor


def main() -> None:
    store, out_file = Path(sys.argv[1]), Path(sys.argv[2])
    written, seconds = copy(store, out_file)
    peak = rss.peak_kib(os.getpid())
    print(orjson.dumps({"resources": written, "seconds": seconds, "peak_kib": peak}).decode())


if __name__ == "__main__":
    main()
