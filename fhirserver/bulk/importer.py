"""`fhirserver import`: Bundle and NDJSON files into the store, through the same
interactions as the REST API (no HTTP), streaming.

Worker processes parse and validate chunks (`prepare.py`); this process, the only
writer, runs them as transactions in input order. Memory stays bounded whatever the
input: a few chunks are in flight at a time, and no file is ever read whole unless
it is one Bundle. A transaction Bundle is written whole or not at all; other
entries (NDJSON lines, batch and collection entries) are written a chunk per unit of
work, and if that unit fails, one by one, so one bad entry costs only itself.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fhirserver.bulk.prepare import Prepared, Problem, prepare
from fhirserver.bulk.sources import Chunk, chunks, input_files
from fhirserver.errors import FHIRError
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.transaction import transaction
from fhirserver.interactions.transaction_entries import read_entries
from fhirserver.storage.base import Store

# Called with (bytes read, bytes in all, resources written) after each chunk.
Progress = Callable[[int, int, int], None]
_OPTIONS = ReadOptions()
# An import loads records as they are: no feature's write rules run (telehealth does not
# provision rooms for imported Appointments), and lastUpdated is the system clock's.
AS_RECORDED = WriteContext()


@dataclass(slots=True)
class ImportReport:
    files: int = 0
    # Entries written (created, updated, or matched by a conditional create).
    written: int = 0
    problems: list[Problem] = field(default_factory=list)
    # Set when --strict stopped the import at its first problem.
    stopped: bool = False


async def import_files(
    store: Store,
    paths: Sequence[str],
    *,
    strict: bool = False,
    workers: int = 0,
    progress: Progress | None = None,
    on_problem: Callable[[Problem], None] | None = None,
    context: WriteContext = AS_RECORDED,
) -> ImportReport:
    """`workers`: processes to parse and validate in; 0 does it in this process."""
    files = input_files(paths)
    report = ImportReport(files=len(files))
    total = sum(path.stat().st_size for path in files)
    done = 0
    pool = _pool(workers)
    try:
        async for prepared in _prepared(_all_chunks(files), pool, workers + 1):
            if strict:
                prepared.cut_at_first_problem()
            written, failed = await _write(store, context, prepared, strict)
            report.written += written
            for problem in [*prepared.problems, *failed]:
                report.problems.append(problem)
                if on_problem is not None:
                    on_problem(problem)
            done += prepared.chunk.size
            if progress is not None:
                progress(done, total, report.written)
            if strict and report.problems:
                report.stopped = True
                break
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


def _all_chunks(files: list[Path]) -> Iterator[Chunk]:
    for path in files:
        yield from chunks(path)


def _pool(workers: int) -> Executor | None:
    """None: prepare() runs in this process (small imports, tests)."""
    if workers <= 0:
        return None
    # spawn: a forked child would inherit the writer's threads and open SQLite handles.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


async def _prepared(
    source: Iterator[Chunk], pool: Executor | None, window: int
) -> AsyncIterator[Prepared]:
    """Prepared chunks in input order, with at most `window` in flight."""
    loop = asyncio.get_running_loop()
    pending: deque[asyncio.Future[Prepared]] = deque()
    for chunk in source:
        if pool is None:
            yield prepare(chunk)
            continue
        pending.append(loop.run_in_executor(pool, prepare, chunk))
        if len(pending) >= window:
            yield await _result(pending.popleft())
    while pending:
        yield await _result(pending.popleft())


async def _result(future: asyncio.Future[Prepared]) -> Prepared:
    try:
        return await future
    except BrokenExecutor:
        raise WorkerDied("a worker process died; what was written so far is kept") from None


class WorkerDied(Exception):
    """A worker process ended abruptly (killed, or out of memory)."""


async def _write(
    store: Store, context: WriteContext, prepared: Prepared, strict: bool
) -> tuple[int, list[Problem]]:
    """Entries written, and the problems met writing."""
    if not prepared.entries:
        return 0, []
    entries = read_entries(prepared.entries, "", validated=True)
    for entry, search_index in zip(entries, prepared.indexes, strict=True):
        entry.search_index = search_index
    try:
        results = await transaction(store, context, entries, _OPTIONS)
        return len(results), []
    except FHIRError as exc:
        if prepared.mode == "transaction":
            return 0, [Problem(prepared.chunk.path, str(exc))]
    # One entry spoiled the chunk's unit of work: write them one by one, in input order
    # (the failed attempt changed the entries, so they are read afresh), and under
    # --strict stop at the first that fails.
    written, problems = 0, []
    for raw, place in zip(prepared.entries, prepared.places, strict=True):
        try:
            await transaction(store, context, read_entries([raw], "", validated=True), _OPTIONS)
            written += 1
        except FHIRError as exc:
            problems.append(Problem(place, str(exc).removeprefix("Bundle.entry[0]: ")))
            if strict:
                break
    return written, problems
