"""The job runner (DESIGN.md "Side effects and external calls", "Scale-out"): a job
recorded in a unit of work runs after commit, is retried with backoff when its handler
cannot finish, runs once when two runners compete, and is given up after MAX_ATTEMPTS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fhirserver.storage.base import Job, Store
from fhirserver.worker import MAX_ATTEMPTS, WAKE_SPACING, JobRunner, TryLater, backoff

T0 = datetime(2025, 3, 1, 9, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def record(store: Store, *jobs: Job) -> None:
    async with store.unit_of_work() as unit:
        for job in jobs:
            await unit.put_job(job)


async def test_a_due_job_runs_once_and_is_gone(store: Store) -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.key)

    clock = Clock()
    await record(store, Job("k", "now", T0), Job("k", "later", T0 + timedelta(hours=1)))
    runner = JobRunner(store, {"k": handler}, clock)
    assert await runner.run_due() == 1
    assert await runner.run_due() == 0
    clock.now = T0 + timedelta(hours=1)
    assert await runner.run_due() == 1
    assert ran == ["now", "later"]


async def test_try_later_retries_with_backoff(store: Store) -> None:
    attempts: list[datetime] = []
    clock = Clock()

    async def flaky(job: Job) -> None:
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise TryLater("provider down")

    await record(store, Job("k", "a", T0))
    runner = JobRunner(store, {"k": flaky}, clock)
    await runner.run_due()
    assert len(attempts) == 1
    clock.now = T0 + backoff(0) - timedelta(microseconds=1)
    assert await runner.run_due() == 0
    clock.now = T0 + backoff(0)
    await runner.run_due()
    clock.now += backoff(1)
    await runner.run_due()
    assert len(attempts) == 3
    clock.now += timedelta(days=1)
    assert await runner.run_due() == 0


async def test_a_job_that_keeps_failing_is_given_up(store: Store) -> None:
    calls = 0
    clock = Clock()

    async def broken(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    await record(store, Job("k", "a", T0))
    runner = JobRunner(store, {"k": broken}, clock)
    for _ in range(MAX_ATTEMPTS + 3):
        await runner.run_due()
        clock.now += timedelta(minutes=10)
    assert calls == MAX_ATTEMPTS


async def test_two_runners_run_each_job_once(store: Store) -> None:
    ran: list[str] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(0.01)
        ran.append(job.key)

    await record(store, *(Job("k", str(n), T0) for n in range(6)))
    first, second = (JobRunner(store, {"k": slow}, Clock()) for _ in range(2))
    await asyncio.gather(first.run_due(), second.run_due())
    assert sorted(ran) == [str(n) for n in range(6)]


async def test_a_stream_of_wake_ups_runs_rounds_spaced_apart(store: Store) -> None:
    # Every commit wakes the runner; 100 wake-ups over about 0.4 s make rounds at most
    # WAKE_SPACING apart, not one round each. A lone wake-up after a quiet spell runs
    # a round at once.
    rounds: list[float] = []
    runner = JobRunner(store, {}, Clock(), idle_seconds=60)
    loop = asyncio.get_running_loop()

    async def counted() -> int:
        rounds.append(loop.time())
        return 0

    runner.run_due = counted  # type: ignore[method-assign]
    task = asyncio.create_task(runner.run_forever())
    try:
        await asyncio.sleep(0.05)
        began = loop.time()
        for _ in range(100):
            runner.wake()
            await asyncio.sleep(0.004)
        # Rounds at least WAKE_SPACING apart over however long the wake-ups took (a
        # busy machine stretches the 0.4 s), with the first round's slack; one round a
        # wake-up would be 100.
        spaced = (loop.time() - began) / WAKE_SPACING + 2
        assert len(rounds) <= spaced < 50, (len(rounds), spaced)
        await asyncio.sleep(2 * WAKE_SPACING)
        quiet = len(rounds)
        runner.wake()
        for _ in range(100):  # a round follows (at once, on an idle loop)
            await asyncio.sleep(0.01)
            if len(rounds) > quiet:
                break
        assert len(rounds) == quiet + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
