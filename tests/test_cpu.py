"""Issue 20, finding 1: CPU-heavy work of large requests runs in worker processes.

`CpuPool` runs small work inline and large work in a process within a time budget;
arguments and results cross in pieces (`dumps` / `loads`), so that unpickling a large
result leaves the event loop's thread the GIL between pieces.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from fhirserver.cpu import CHUNK, CpuLimits, CpuPool, dumps, loads
from fhirserver.errors import BadRequest, PayloadTooLarge, Unavailable


class Pair(NamedTuple):
    left: int
    right: str


def pid() -> int:
    return os.getpid()


def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def refuse(message: str) -> None:
    raise BadRequest(message, expression="Patient.name")


def echo(value: object) -> object:
    return value


@pytest.fixture
async def pool() -> AsyncIterator[CpuPool]:
    cpu = CpuPool(CpuLimits(offload_bytes=100, budget_seconds=2, workers=1))
    yield cpu
    await asyncio.to_thread(cpu.close)


async def test_small_work_runs_inline_and_large_work_in_a_process(pool: CpuPool) -> None:
    assert await pool.run(pid, cost=99) == os.getpid()
    worker = await pool.run(pid, cost=100)
    assert worker != os.getpid()
    # The process is kept for the next large body.
    assert await pool.run(pid, cost=10_000) == worker


async def test_errors_in_a_worker_reach_the_caller_whole(pool: CpuPool) -> None:
    with pytest.raises(BadRequest) as refused:
        await pool.run(refuse, "no name", cost=1000)
    assert refused.value.issues[0].diagnostics == "no name"
    assert refused.value.issues[0].expression == "Patient.name"


async def test_work_past_the_budget_is_stopped_with_413(pool: CpuPool) -> None:
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as stopped:
        await pool.run(sleep_then, 30.0, 1, cost=1000)
    assert time.monotonic() - started < 15
    assert stopped.value.status == 413 and stopped.value.code == "too-costly"
    assert "2 s budget" in str(stopped.value)
    # The stopped worker is replaced: the pool goes on working.
    assert await pool.run(sleep_then, 0.0, 7, cost=1000) == 7


async def test_a_saturated_pool_answers_503_at_once(pool: CpuPool) -> None:
    # One worker: four large bodies may wait, the fifth is refused with Retry-After.
    waiting = [asyncio.create_task(pool.run(sleep_then, 1.0, n, cost=1000)) for n in range(4)]
    await asyncio.sleep(0.05)
    with pytest.raises(Unavailable) as busy:
        await pool.run(sleep_then, 0.0, 9, cost=1000)
    assert busy.value.headers["Retry-After"] == "5"
    assert await asyncio.gather(*waiting) == [0, 1, 2, 3]
    assert await pool.run(pid, cost=5) == os.getpid()


async def test_long_lists_cross_to_a_worker_and_back(pool: CpuPool) -> None:
    value = {"name": [{"family": f"F{i}"} for i in range(3 * CHUNK + 1)], "t": tuple(range(5))}
    assert await pool.run(echo, value, cost=1000) == value


@pytest.mark.parametrize(
    "value",
    [
        list(range(CHUNK * 5 + 3)),
        tuple(range(CHUNK + 1)),
        [[i, (i, str(i))] for i in range(CHUNK * 2)],
        {"nested": [list(range(CHUNK * 2))] * 3},
        [Pair(i, str(i)) for i in range(CHUNK + 5)],
        Pair(1, "x"),
        [],
        (),
    ],
    ids=["list", "tuple", "nested-pairs", "nested-lists", "namedtuples", "namedtuple", "e", "et"],
)
def test_pieces_put_back_what_was_packed(value: object) -> None:
    again = loads(dumps(value))
    assert again == value
    assert type(again) is type(value)
