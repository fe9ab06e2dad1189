"""CPU-heavy request work off the event loop: parsing, validating and indexing a large
body run in worker processes, so one client's 15 MB resource does not stall every
other client's reads (issue 20).

Threads would not do: validation and index extraction are pure Python and hold the
GIL, so a thread doing them still slows the loop to a crawl. Nor may the result come
back as one pickle: unpickling a 5 MB resource's 450,000 index entries is one C call
that holds the GIL for over a second. Arguments and results cross in chunks instead
(`dumps` / `loads`): each long list is pickled a thousand items at a time and unpickled
piece by piece in a thread, so the loop gets the GIL back between pieces. Work smaller than
`offload_bytes` runs inline, where the hop to a process (pickling the arguments and the
result, ~1 ms) would cost more than the work. Offloaded work has a time budget; a worker
past it is killed (pebble replaces it) and the request answers 413 `too-costly`.

The processes start on the first large body (spawned: the server's threads are not
forked into them) and stop with the app.
"""

from __future__ import annotations

import asyncio
import gc
import io
import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from fhirserver.errors import PayloadTooLarge, Unavailable

T = TypeVar("T")
# Items per piece of a long list: unpickling a piece takes a few milliseconds.
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class CpuLimits:
    # Bodies (or stored resources) of at least this many bytes are worked on in a process.
    offload_bytes: int = 64 * 1024
    # Seconds of work one offloaded step may take before it is stopped.
    budget_seconds: float = 30.0
    # Worker processes; 0: one per core.
    workers: int = 0


class CpuPool:
    """Runs `fn(*args)` inline when `cost` (a size in bytes) is small, else in a worker
    process within the time budget. One per app; `close()` stops its processes."""

    def __init__(self, limits: CpuLimits | None = None) -> None:
        self.limits = limits or CpuLimits()
        self._pool: ProcessPool | None = None
        self._queued = 0

    @property
    def workers(self) -> int:
        return self.limits.workers or os.cpu_count() or 1

    async def run(self, fn: Callable[..., T], *args: Any, cost: int) -> T:
        if cost < self.limits.offload_bytes:
            return fn(*args)
        # More waiting than a few rounds of work: the server is saturated with large
        # bodies; say so at once rather than queue without bound.
        if self._queued >= 4 * self.workers:
            raise Unavailable(
                "The server is busy with other large requests; try again shortly",
                headers={"Retry-After": "5"},
            )
        self._queued += 1
        try:
            packed = await asyncio.to_thread(dumps, args)
            future = self._start().schedule(
                _call, args=(fn, packed), timeout=self.limits.budget_seconds
            )
            # Cancelling the request (the client went away) cancels the future, and pebble
            # stops the worker running it.
            result: T = await asyncio.to_thread(loads, await asyncio.wrap_future(future))
            return result
        except FutureTimeout:
            raise PayloadTooLarge(
                f"Working on this body took longer than the server's"
                f" {self.limits.budget_seconds:g} s budget; send smaller resources"
            ) from None
        except ProcessExpired:
            raise Unavailable("A worker process ended while working on the request") from None
        finally:
            self._queued -= 1

    def _start(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(
                max_workers=self.workers, context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()  # type: ignore[no-untyped-call]
            self._pool.join()
            self._pool = None


# The collector's thresholds while serving (Python's defaults: 700, 10, 10). A large
# request allocates millions of objects, and with the defaults that sets off a full
# collection every few hundred thousand of them: dozens of 40 to 130 ms pauses for every
# thread per 2 MB resource. Young collections every 50,000 net allocations and a full
# one at most every 100 middle ones still free cyclic garbage within seconds under load.
GC_THRESHOLDS = (50_000, 20, 100)
# How long a thread holding the GIL keeps it when another asks (Python's default: 5 ms).
# The event loop asks often (each read hops to a reader thread and back); 1 ms took a
# reader's p99 beside a large write from 140 to 70 ms.
SWITCH_INTERVAL = 0.001


async def work(cpu: CpuPool | None, fn: Callable[..., T], *args: Any, cost: int) -> T:
    """`fn(*args)` on `cpu` (inline when there is none: tools and tests)."""
    if cpu is None:
        return fn(*args)
    return await cpu.run(fn, *args, cost=cost)


def tune_collector() -> None:
    """Freeze what the process has built so far (modules, compiled definitions) out of
    the collector's scans, which then run at GC_THRESHOLDS. For the server, and for
    `fhirserver import` and its worker processes: with Python's defaults a tenth of an
    import worker's time went to collections (391 against 353 us a resource)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tune_for_serving() -> None:
    """Set the interpreter up for a long-running server, once the app is built."""
    tune_collector()
    sys.setswitchinterval(SWITCH_INTERVAL)


def _call(fn: Callable[..., T], packed: bytes) -> bytes:
    """In the worker: unpack the arguments, call, pack the result."""
    return dumps(fn(*loads(packed)))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        # Only exact lists and tuples: a subclass (a NamedTuple) would come back as its base.
        kind = type(obj)
        if (kind is list or kind is tuple) and len(obj) > CHUNK:
            pieces = [dumps(obj[i : i + CHUNK]) for i in range(0, len(obj), CHUNK)]
            return (kind is tuple, pickle.dumps(pieces, pickle.HIGHEST_PROTOCOL))
        return None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        as_tuple, blob = pid
        items: list[Any] = []
        for piece in pickle.loads(blob):
            items.extend(loads(piece))
        return tuple(items) if as_tuple else items


def dumps(value: Any) -> bytes:
    """`value` pickled with its long lists and tuples in separate pieces."""
    out = io.BytesIO()
    _Pickler(out, pickle.HIGHEST_PROTOCOL).dump(value)
    return out.getvalue()


def loads(data: bytes) -> Any:
    """What `dumps` packed; the GIL is free between pieces.

    The collector is held off meanwhile: the millions of objects a large resource
    unpickles into would set off full collections, each a pause of hundreds of
    milliseconds for every thread; none of them is garbage yet."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _Unpickler(io.BytesIO(data)).load()
    finally:
        if collecting:
            gc.enable()
