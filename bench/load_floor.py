"""The floor for bulk loading: what SQLite itself costs to take the same resources.

Every resource's JSON (as in the files: parsed with orjson and dumped again, so compact,
but neither validated nor rewritten) goes with its fullUrl as key into a plain table
`(id TEXT PRIMARY KEY, body BLOB)` by one `executemany` per Bundle, one transaction per
Bundle, under the PRAGMAs the server runs with (WAL, synchronous=NORMAL); no history, no
search index. INSERT OR REPLACE, so a fullUrl repeated in another Bundle is written
again, as the server updates it. The time includes reading and parsing the files.

It runs in a process of its own (`python -m bench.load_floor DIR STORE`), which reports
its own peak RSS, so the figure is not the bench's imports and earlier runs.
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
from bench.load_data import LoadBenchError, Survey, bundle_files, bundles


@dataclass(frozen=True, slots=True)
class Floor:
    resources: int
    seconds: float
    # Rows in the table afterwards: one per distinct fullUrl.
    rows: int
    peak_kib: int

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds


def load(files: list[Path], store: Path) -> tuple[int, float]:
    """Resources written and the seconds it took."""
    started = time.perf_counter()
    # isolation_level=None: the transactions are the explicit BEGIN / COMMIT below.
    connection = sqlite3.connect(store, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE resources (id TEXT PRIMARY KEY, body BLOB)")
        written = 0
        for _, entries in bundles(files):
            rows = [(entry["fullUrl"], orjson.dumps(entry["resource"])) for entry in entries]
            connection.execute("BEGIN")
            connection.executemany("INSERT OR REPLACE INTO resources VALUES (?, ?)", rows)
            connection.execute("COMMIT")
            written += len(rows)
    finally:
        connection.close()  # in the time: the last checkpoint of the WAL, as a server's close
    return written, time.perf_counter() - started


async def measure(survey: Survey, store: Path) -> Floor:
    command = [sys.executable, "-m", "bench.load_floor", str(survey.directory), str(store)]
    async with child.started(command, stdout=child.PIPE) as process:
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise LoadBenchError(f"the floor exited with status {process.returncode}")
    figures = orjson.loads(out.splitlines()[-1])
    floor = Floor(figures["resources"], figures["seconds"], figures["rows"], figures["peak_kib"])
    if floor.resources != survey.total or floor.rows != survey.distinct:
        raise LoadBenchError(
            f"the floor wrote {floor.resources} resources into {floor.rows} rows; "
            f"expected {survey.total} into {survey.distinct}"
        )
    return floor


def main() -> None:
    directory, store = Path(sys.argv[1]), Path(sys.argv[2])
    written, seconds = load(bundle_files(directory), store)
    connection = sqlite3.connect(store)
    try:
        (rows,) = connection.execute("SELECT count(*) FROM resources").fetchone()
    finally:
        connection.close()
    peak = rss.peak_kib(os.getpid())
    figures = {"resources": written, "seconds": seconds, "rows": rows, "peak_kib": peak}
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
