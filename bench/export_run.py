"""One system-level bulk export of a store, by the server's own export engine, in a
process of its own (`python -m bench.export_run STORE OUT_DIR`), which prints its figures
as one JSON line: resources written, seconds, its peak RSS (VmHWM) and its RSS just
before the export began (the interpreter, fhirserver's modules and the open store), and
what explains the peak: SQLite's own heap high-water (its page caches, one per
connection; `sqlite3_memory_highwater`) and how many store threads the export ran on
(each has a connection, and a malloc arena holding its high-water of row data).

The export is what `$export` kicks off (fhirserver.bulk.export_job): the kick-off
records the job over a change-sequence snapshot, then the job runner (worker.JobRunner)
runs it chunk by chunk until done, with the server's default settings (chunk size, file
size). No HTTP: the bench measures the export, not the status polling. The time runs
from the kick-off to the last file written; the lines in the files are counted after.
"""

from __future__ import annotations

import _sqlite3
import asyncio
import ctypes
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson

from bench import child, rss
from bench.load_data import LoadBenchError
from bench.rss_trace import RssTrace
from fhirserver.bulk.export_job import (
    DONE,
    ExportConfig,
    cancel_export,
    export_handlers,
    export_status,
    kick_off,
)
from fhirserver.bulk.export_request import SYSTEM, ExportRequest, exportable_types
from fhirserver.clock import system_clock
from fhirserver.config import Settings
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.worker import JobRunner


@dataclass(frozen=True, slots=True)
class ExportRun:
    resources: int
    seconds: float
    peak_kib: int
    # RSS before the export started: what the peak is over and above.
    start_kib: int
    bytes_written: int
    # The largest VmRSS sampled in the first and in the second half of the run: level
    # when memory is bounded, the second higher when it grows with the work done.
    first_half_kib: int
    second_half_kib: int
    # SQLite's heap high-water (None: not measurable here) and the store's threads.
    sqlite_peak_kib: int | None = None
    store_threads: int = 0

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds


def sqlite_peak_kib() -> int | None:
    """SQLite's heap high-water in this process (sqlite.org/c3ref/memory_highwater.html),
    from the library the sqlite3 module is linked with; None if it does not export it."""
    try:
        highwater = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_highwater
    except (OSError, AttributeError):
        return None
    highwater.restype, highwater.argtypes = ctypes.c_int64, [ctypes.c_int]
    return int(highwater(0)) // 1024


def _store_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("sqlite-"))


async def export(store_path: Path, out_dir: Path) -> tuple[int, float, int, int, int]:
    """Export every current resource of the store into `out_dir`: (resources written,
    seconds, bytes written, RSS before the export in KiB, store threads used)."""
    settings = Settings()
    config = ExportConfig(
        out_dir, timedelta(hours=1), settings.export_max_file_bytes, settings.export_chunk
    )
    store = SqliteStore(str(store_path))
    await store.open()
    export_id = f"bench-{uuid.uuid4().hex}"
    try:
        start_kib = rss.status_kib(os.getpid(), "VmRSS") or 0
        started = time.perf_counter()
        request = ExportRequest(SYSTEM, exportable_types(SYSTEM), request_url="bench")
        await kick_off(store, request, system_clock, export_id)
        await JobRunner(store, export_handlers(store, config, system_clock), system_clock).run_due()
        seconds = time.perf_counter() - started
        threads = _store_threads()
        status = await export_status(store, export_id, system_clock())
        if status is None or status["state"] != DONE:
            raise LoadBenchError(f"the export did not finish: {status}")
        folder = out_dir / export_id
        lines = sum(_lines(file) for file in folder.iterdir())
        if lines != status["written"]:
            raise LoadBenchError(
                f"the files hold {lines} lines; the export says {status['written']}"
            )
        size = sum(file.stat().st_size for file in folder.iterdir())
        # Leaves the cached store as it was, but for a small expiring cancellation mark.
        await cancel_export(store, config, system_clock, export_id)
    finally:
        await store.close()
    return lines, seconds, size, start_kib, threads


def _lines(file: Path) -> int:
    count = 0
    with file.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


async def measure(store: Path, out_dir: Path, expected: int) -> ExportRun:
    command = [sys.executable, "-m", "bench.export_run", str(store), str(out_dir)]
    async with child.started(command, stdout=child.PIPE) as process:
        with RssTrace(process.pid) as trace:
            out, _ = await process.communicate()
    if process.returncode != 0:
        raise LoadBenchError(f"the export exited with status {process.returncode}")
    figures = orjson.loads(out.splitlines()[-1])
    run = ExportRun(
        figures["resources"],
        figures["seconds"],
        figures["peak_kib"],
        figures["start_kib"],
        figures["bytes"],
        trace.peak_in(0.0, 0.5),
        trace.peak_in(0.5, 1.0),
        figures["sqlite_peak_kib"],
        figures["store_threads"],
    )
    if run.resources != expected:
        raise LoadBenchError(f"the export wrote {run.resources} resources, not {expected}")
    return run


def main() -> None:
    store, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    try:
        written, seconds, size, start_kib, threads = asyncio.run(export(store, out_dir))
    except LoadBenchError as error:
        sys.exit(f"export: {error}")
    peak = rss.peak_kib(os.getpid())
    figures = {
        "resources": written,
        "seconds": seconds,
        "peak_kib": peak,
        "start_kib": start_kib,
        "bytes": size,
        "sqlite_peak_kib": sqlite_peak_kib(),
        "store_threads": threads,
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
