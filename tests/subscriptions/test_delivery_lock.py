"""The delivery lock has an owner (R4 subscription.html "rest-hook": notifications of
one subscription are sent in order; Backport IG 1.1.0 "Notifications": events in
`eventNumber` order). One worker delivers a subscription at a time under an expiring
lock; a worker whose lock ran out mid-request (a slow endpoint, a pause) finds out
that it lost the lock, sends nothing more, and neither renews, releases nor steps
back what the worker that took the lock over does."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from datetime import timedelta

import pytest

from fhirserver.subscriptions import delivery
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, delivery_state
from fhirserver.subscriptions.kinds import DELIVERING
from fhirserver.subscriptions.matcher import match_changes
from fhirserver.subscriptions.model import SubscriptionSpec
from tests.subscriptions.conftest import Harness, criteria_subscription

WORKER: contextvars.ContextVar[str] = contextvars.ContextVar("worker")
# Well past the lock's time (twice the delivery timeout and 5 s).
LAPSE = timedelta(minutes=5)


class Endpoint:
    """Stands in for the sending: records which worker sent which event numbers, and
    holds a worker's first request until the test lets it go."""

    def __init__(self, held: Sequence[str]) -> None:
        self.sent: list[tuple[str, list[int]]] = []
        self.arrived = {name: asyncio.Event() for name in held}
        self.answer = {name: asyncio.Event() for name in held}

    async def send(
        self,
        context: SubscriptionContext,
        spec: SubscriptionSpec,
        events: Sequence[Event],
        secret: str | None = None,
    ) -> None:
        worker = WORKER.get()
        first = all(who != worker for who, _ in self.sent)
        self.sent.append((worker, [event.number for event in events]))
        if first and worker in self.arrived:
            self.arrived[worker].set()
            await self.answer[worker].wait()

    async def settle(self, *tasks: asyncio.Task[None]) -> None:
        """Answer every held request and wait for the workers (a failed test's too)."""
        for answer in self.answer.values():
            answer.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    def by(self, worker: str) -> list[list[int]]:
        return [numbers for who, numbers in self.sent if who == worker]


async def _two_events(harness: Harness) -> tuple[SubscriptionContext, str]:
    """An active subscription with two recorded, undelivered events."""
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    context: SubscriptionContext = harness.app.state.subscriptions
    for _ in range(2):
        await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await match_changes(context)
    return context, str(sub["id"])


async def _worker(name: str, context: SubscriptionContext, subscription_id: str) -> None:
    WORKER.set(name)
    await delivery.deliver(context, subscription_id)


def _start(name: str, context: SubscriptionContext, subscription_id: str) -> asyncio.Task[None]:
    return asyncio.create_task(_worker(name, context, subscription_id))


async def test_a_lapsed_worker_neither_renews_nor_releases_the_new_holders_lock(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, subscription_id = await _two_events(harness)
    endpoint = Endpoint(held=["first", "second"])
    monkeypatch.setattr(delivery, "send_events", endpoint.send)
    store = context.store
    first = _start("first", context, subscription_id)
    second: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(10):
            await endpoint.arrived["first"].wait()
            # The first's request outlives its lock: the second takes over.
            harness.clock.move_to(harness.clock() + LAPSE)
            second = _start("second", context, subscription_id)
            await endpoint.arrived["second"].wait()
            held = await store.get_record(DELIVERING, subscription_id, harness.clock())
            assert held is not None
            endpoint.answer["first"].set()
            await first
            # The first sent nothing after its request and left the second's lock as
            # it was (neither renewed as its own nor removed).
            assert endpoint.by("first") == [[1]]
            assert await store.get_record(DELIVERING, subscription_id, harness.clock()) == held
            # The second, still holding it, delivers the rest, then lets go.
            endpoint.answer["second"].set()
            await second
    finally:
        await endpoint.settle(first, *([second] if second else []))
    assert endpoint.by("second") == [[1], [2]]
    assert await store.get_record(DELIVERING, subscription_id, harness.clock()) is None
    state = await delivery_state(store, subscription_id, harness.clock())
    assert state["delivered"] == 2


async def test_a_lapsed_worker_does_not_step_delivery_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, subscription_id = await _two_events(harness)
    endpoint = Endpoint(held=["first"])
    monkeypatch.setattr(delivery, "send_events", endpoint.send)
    first = _start("first", context, subscription_id)
    try:
        async with asyncio.timeout(10):
            await endpoint.arrived["first"].wait()
            harness.clock.move_to(harness.clock() + LAPSE)
            # The second delivers both events and lets go while the first's request is out.
            await _worker("second", context, subscription_id)
            assert endpoint.by("second") == [[1], [2]]
            endpoint.answer["first"].set()
            await first
    finally:
        await endpoint.settle(first)
    # The first's late answer neither records event 1 as the last delivered (which
    # would send event 2 again) nor sends anything more.
    assert endpoint.by("first") == [[1]]
    state = await delivery_state(context.store, subscription_id, harness.clock())
    assert state["delivered"] == 2


async def test_a_dead_workers_lock_delays_delivery_but_does_not_stop_it(
    harness: Harness,
) -> None:
    """A worker killed mid-delivery leaves its lock behind. The next worker to run the
    delivery job finds it held; once the lock has run out, the events still go out
    (nobody else would send them: the dead worker never looks for new events again)."""
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=kill"))
    await harness.run_jobs(rounds=1)
    context: SubscriptionContext = harness.app.state.subscriptions
    store, now = context.store, harness.clock()
    await store.put_record(DELIVERING, str(sub["id"]), {"token": "dead"}, now + LAPSE)
    await harness.create({"resourceType": "Patient", "name": [{"family": "kill"}]})
    await harness.run_jobs()
    assert harness.receiver.received == []
    await harness.later(LAPSE)
    assert len(harness.receiver.received) == 1
