"""`fhirserver import`: Bundle and NDJSON files into the store, through the same
interactions as the REST API (no HTTP), streaming.

Worker processes parse and validate chunks (`prepare.py`); this process, the only
writer, runs them as transactions in input order. Memory stays bounded whatever the
input: a few chunks are in flight at a time, and no file is ever read whole unless
it is one Bundle. A transaction Bundle is written whole or not at all; other
entries (NDJSON lines, batch and collection entries) are written a chunk per unit of
work, and if that unit fails, one by one, so one bad entry costs only itself.

Consecutive small chunks share a unit of work, up to GROUP_BYTES of input: each commit
writes the pages it changed to the store once, and pages of the index B-trees are
changed by chunk after chunk, so one commit per Bundle wrote them a hundred times
over. If the shared unit fails, nothing of it was written, and its chunks are prepared
again and written each alone, as above: the outcome is the same as without sharing.
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
from fhirserver.cpu import tune_collector
from fhirserver.errors import FHIRError
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.transaction import transaction, transactions
from fhirserver.interactions.transaction_entries import Entry, read_entries
from fhirserver.storage.base import Store

# Called with (bytes read, bytes in all, resources written) after each chunk.
Progress = Callable[[int, int, int], None]
_OPTIONS = ReadOptions()
# An import loads records as they are: no feature's write rules run (telehealth does not
# provision rooms for imported Appointments), and lastUpdated is the system clock's.
AS_RECORDED = WriteContext()
# Input bytes of consecutive chunks written in one unit of work, at most (a chunk is
# never split): several Synthea Bundles (1 MiB on average). One unit per Bundle imported
# the Synthea set at about 1,690 resources/s (100 commits), shared ones at about 1,870
# (24 commits), for 60 MiB more peak RSS (218 against 156).
GROUP_BYTES = 8 * 1024 * 1024
# A chunk of this many entries or this much input (an NDJSON chunk: 1,000 lines, up to 2
# MiB) is written alone: it spreads its commit over enough already, and a unit holds all
# its entries' parsed resources, versions and index entries at once: grouping the NDJSON
# chunks made the 1x NDJSON import's peak RSS 263 MiB instead of 165, and it slower.
ALONE_ENTRIES = 1000
ALONE_BYTES = 2 * 1024 * 1024
# Input bytes of the chunks handed to the worker processes and not yet written, at least
# (and workers + 1 chunks in any case): a whole group, so that the workers prepare the
# next group while one is written, and the writer does not wait for them when it is
# done. With 4 MiB (half a group) the Synthea set imported at 1,866 to 1,884
# resources/s, with 8 MiB at 2,013 to 2,071, for 7 MiB more peak RSS in the import's
# own process (259 against 251 MiB); 16 MiB added 1% for 19 MiB more.
WINDOW_BYTES = GROUP_BYTES


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
        async for group in _groups(_prepared(_all_chunks(files), pool, workers + 1), strict):
            shared = len(group) > 1
            written_together = shared and await _write_together(store, context, group)
            for prepared in group:
                failed: list[Problem] = []
                if written_together:
                    written = len(prepared.entries)
                else:
                    if shared:  # the shared unit that failed changed the entries
                        prepared = await _prepare_again(prepared.chunk, pool, strict)
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
                    return report
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return report


async def _groups(prepared: AsyncIterator[Prepared], strict: bool) -> AsyncIterator[list[Prepared]]:
    """Consecutive chunks of up to GROUP_BYTES of input in all; a large chunk alone.
    Under --strict a chunk with a problem ends its group: nothing after it may be
    written."""
    group: list[Prepared] = []
    size = 0
    async for chunk in prepared:
        if strict:
            chunk.cut_at_first_problem()
        alone = len(chunk.entries) >= ALONE_ENTRIES or chunk.chunk.size >= ALONE_BYTES
        if group and (alone or size + chunk.chunk.size > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(chunk)
        size += chunk.chunk.size
        if alone or (strict and chunk.problems):
            yield group
            group, size = [], 0
    if group:
        yield group


async def _write_together(store: Store, context: WriteContext, group: list[Prepared]) -> bool:
    """The group's entries in one unit of work, each chunk as one transaction; whether
    they were written (False: none was, and the chunks are still to write)."""
    try:
        await transactions(store, context, [_entries(p) for p in group if p.entries], _OPTIONS)
    except FHIRError:
        return False
    return True


async def _prepare_again(chunk: Chunk, pool: Executor | None, strict: bool) -> Prepared:
    if pool is None:
        again = prepare(chunk)
    else:
        again = await _result(asyncio.get_running_loop().run_in_executor(pool, prepare, chunk))
    if strict:
        again.cut_at_first_problem()
    return again


def _entries(prepared: Prepared) -> list[Entry]:
    entries = read_entries(prepared.entries, "", validated=True)
    for entry, search_index in zip(entries, prepared.indexes, strict=True):
        entry.search_index = search_index
    return entries


def _all_chunks(files: list[Path]) -> Iterator[Chunk]:
    for path in files:
        yield from chunks(path)


def _pool(workers: int) -> Executor | None:
    """None: prepare() runs in this process (small imports, tests)."""
    if workers <= 0:
        return None
    # spawn: a forked child would inherit the writer's threads and open SQLite handles.
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=tune_collector
    )


async def _prepared(
    source: Iterator[Chunk], pool: Executor | None, window: int
) -> AsyncIterator[Prepared]:
    """Prepared chunks in input order. At least `window` chunks are in flight, and more
    while they hold under WINDOW_BYTES of input: the workers go on preparing the next
    group while this process writes one."""
    loop = asyncio.get_running_loop()
    pending: deque[tuple[asyncio.Future[Prepared], int]] = deque()
    in_flight = 0
    for chunk in source:
        if pool is None:
            yield prepare(chunk)
            continue
        pending.append((loop.run_in_executor(pool, prepare, chunk), chunk.size))
        in_flight += chunk.size
        while len(pending) >= window and in_flight >= WINDOW_BYTES:
            future, size = pending.popleft()
            in_flight -= size
            yield await _result(future)
    while pending:
        yield await _result(pending.popleft()[0])


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
    try:
        results = await transaction(store, context, _entries(prepared), _OPTIONS)
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
