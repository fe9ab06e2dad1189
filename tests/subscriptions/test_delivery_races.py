"""Several delivery workers on one store (DESIGN.md "Scale-out"; issue 15 "Durable
delivery": several server processes on one store deliver each event once under
leases), and a slow endpoint that must not hold up the others (issue 15 "Safety")."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import timedelta

from fhirserver.worker import JobRunner
from tests.subscriptions.conftest import Harness, criteria_subscription
from tests.subscriptions.receiver import Receiver, serving


async def test_two_runners_racing_deliver_each_event_once(harness: Harness) -> None:
    receiver = harness.receiver
    receiver.delay = 0.05
    for n in range(3):
        await harness.create(
            criteria_subscription(
                f"{receiver.url}/sub{n}", "Patient?family=smith", payload="application/fhir+json"
            )
        )
    first = harness.jobs
    second = JobRunner(first.store, first.handlers, harness.clock, concurrency=4)

    async def writes() -> list[str]:
        ids = []
        for _ in range(8):
            created = await harness.create(
                {"resourceType": "Patient", "name": [{"family": "smith"}]}
            )
            ids.append(created["id"])
            await asyncio.sleep(0.07)
        return ids

    async def runs(runner: JobRunner) -> None:
        # The matcher looks again a second on: the clock moves so that it is due.
        for _ in range(40):
            harness.clock.move_to(harness.clock() + timedelta(seconds=1))
            await runner.run_due()
            await asyncio.sleep(0.01)

    ids, *_ = await asyncio.gather(writes(), runs(first), runs(second))
    for _ in range(5):
        harness.clock.move_to(harness.clock() + timedelta(seconds=2))
        await asyncio.gather(first.run_due(), second.run_due())
    delivered = Counter(r.path for r in receiver.received)
    expected = {f"/sub{n}/Patient/{i}": 1 for n in range(3) for i in ids}
    assert dict(delivered) == expected
    # In order, per subscription.
    for n in range(3):
        got = [
            r.path.rsplit("/", 1)[-1] for r in receiver.received if r.path.startswith(f"/sub{n}/")
        ]
        assert got == ids


async def test_a_slow_endpoint_does_not_hold_up_another(harness: Harness) -> None:
    fast = harness.receiver
    async with serving(Receiver(delay=3.0)) as slow:
        await harness.create(criteria_subscription(slow.url, "Patient?family=smith"))
        await harness.create(criteria_subscription(fast.url, "Patient?family=smith"))
        await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
        started = time.monotonic()
        await harness.run_jobs(rounds=1)
        [got] = fast.received
        assert got.at - started < 2.0, "the fast endpoint waited for the slow one"
        assert len(slow.received) == 1
