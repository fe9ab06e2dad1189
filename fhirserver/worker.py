"""The background loop (DESIGN.md "worker.py"): runs the store's jobs ("Side effects and
external calls"), the intents that units of work recorded with their state changes,
acted on after commit. Not a FHIR interaction: features hand it their job handlers.

A runner claims one due job at a time with a lease, so several server processes can
run side by side and a dead one's job passes to another when its lease runs out. A
handler must be idempotent: a job can run twice (a lease ran out mid-run), never zero
times. A handler that raises TryLater, or fails unexpectedly, has its job retried with
exponential backoff; after MAX_ATTEMPTS the job is dropped with an error in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from fhirserver.clock import Clock
from fhirserver.storage.base import Job, Store

logger = logging.getLogger("fhirserver.jobs")

Handler = Callable[[Job], Awaitable[None]]

MAX_ATTEMPTS = 12
# The default lease (Settings.job_lease_seconds): it outlives any one run, a provider
# call times out well before it.
LEASE = timedelta(seconds=60)
# Seconds from the start of one round to the next, at least, when wake-ups come faster:
# under a stream of writes every commit wakes the runner, and a round a commit (a claim,
# the matcher's poll and its job's update) cost the writes about 4% of their rate
# (`make bench`: 532-539 creates/s, 557-560 with rounds 20 ms apart). A notification
# still follows a lone write at once (the subscriptions bench: p50 7.0 ms before, 6.8
# after).
WAKE_SPACING = 0.02


class TryLater(Exception):
    """The job could not be done now (an outage): run it again after a backoff."""


def backoff(attempts: int) -> timedelta:
    """1 s, 2 s, 4 s ... capped at 5 minutes."""
    return timedelta(seconds=min(2**attempts, 300))


class JobRunner:
    def __init__(
        self,
        store: Store,
        handlers: Mapping[str, Handler],
        clock: Clock,
        idle_seconds: float = 1.0,
        lease: timedelta = LEASE,
        concurrency: int = 1,
        early: Mapping[str, timedelta] | None = None,
        wake_spacing: float = WAKE_SPACING,
    ) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self.clock = clock
        self.idle_seconds = idle_seconds
        # How long a claimed job is this runner's: a dead runner's job passes to another
        # after it.
        self.lease = lease
        # How many jobs run at once: a slow one (a notification endpoint that times
        # out) holds up only its own slot.
        self.concurrency = max(1, concurrency)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Polls brought forward: once woken, a job of one of these kinds due within the
        # given time runs now (the subscription matcher, which looks at the change log
        # every second, looks right after a commit instead).
        self.early = dict(early or {})
        self._early_due = False
        self._wake = asyncio.Event()
        self.wake_spacing = wake_spacing

    def wake(self) -> None:
        """Look for due jobs now rather than after the idle pause (after a commit)."""
        self._early_due = bool(self.early)
        self._wake.set()

    async def run_due(self) -> int:
        """Run every job due now, up to `concurrency` at a time; how many ran."""
        ran = 0
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while len(running) < self.concurrency:
                    job = await self._claim()
                    if job is None:
                        break
                    if self.concurrency == 1:
                        await self._run(job)
                        ran += 1
                        continue
                    running.add(asyncio.create_task(self._run(job)))
                if not running:
                    return ran
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                ran += len(done)
        finally:
            for task in running:
                task.cancel()

    async def _claim(self) -> Job | None:
        now = self.clock()
        job = await self.store.claim_job(list(self.handlers), self.owner, now, self.lease)
        if job is None and self._early_due:
            self._early_due = False
            for kind, ahead in self.early.items():
                # A lease ending within `ahead` counts as run out here: harmless for a
                # poll, whose handler is idempotent and runs for well under a lease.
                job = await self.store.claim_job([kind], self.owner, now + ahead, self.lease)
                if job is not None:
                    return job
        return job

    async def _run(self, job: Job) -> None:
        try:
            await self.handlers[job.kind](job)
        except TryLater as exc:
            await self._retry(job, str(exc))
        except Exception:
            logger.exception("job %s/%s failed", job.kind, job.key)
            await self._retry(job, "failed")
        else:
            await self.store.finish_job(job)

    async def _retry(self, job: Job, why: str) -> None:
        if job.attempts + 1 >= MAX_ATTEMPTS:
            logger.error("job %s/%s given up after %d attempts", job.kind, job.key, MAX_ATTEMPTS)
            await self.store.finish_job(job)
            return
        logger.warning("job %s/%s will be retried: %s", job.kind, job.key, why)
        await self.store.retry_job(job, self.clock() + backoff(job.attempts))

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before the round, not after: a wake-up during it starts another.
            self._wake.clear()
            began = loop.time()
            try:
                await self.run_due()
            except Exception:
                # The store was unavailable: the jobs are still there for the next round.
                logger.exception("running jobs failed")
            # asyncio.timeout, not wait_for: on Python 3.11 a cancellation that meets
            # a wake-up inside wait_for can be lost, and the app's shutdown then waits
            # on this task for ever (seen as a hung test teardown).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_seconds):
                    await self._wake.wait()
            rest = self.wake_spacing - (loop.time() - began)
            if rest > 0:
                await asyncio.sleep(rest)
