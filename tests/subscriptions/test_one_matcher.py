"""One matcher at a time, across processes (R4 subscription.html "Subscriptions": the
server evaluates each change against the active subscriptions; Backport IG 1.1.0
"Notifications": `eventsSinceSubscriptionStart` counts up, events in order). A
Subscription write puts the MATCH job again while a matcher may be running it; the
job put again is free to claim, and a second runner that claims it must not match
beside the first (its event count could step back), yet matching must go on."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from fhirserver.storage.base import Store
from fhirserver.subscriptions import matcher
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, events_so_far
from fhirserver.subscriptions.kinds import CURSOR, MATCH_KEY
from fhirserver.subscriptions.matcher import LOCK_TIME, match_changes
from fhirserver.worker import JobRunner
from tests.subscriptions.conftest import Harness, criteria_subscription

SMITH = {"resourceType": "Patient", "name": [{"family": "smith"}]}


class Gate:
    """Holds the first matcher at its first event, and counts every event another
    matcher records meanwhile."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.answer = asyncio.Event()
        self.beside = 0
        self.real = matcher.append_event

    async def append_event(
        self, store: Store, subscription_id: str, event: Event, now: datetime, keep: timedelta
    ) -> int | None:
        if self.arrived.is_set() and not self.answer.is_set():
            self.beside += 1
        elif not self.arrived.is_set():
            self.arrived.set()
            await self.answer.wait()
        return await self.real(store, subscription_id, event, now, keep)


async def _subscribed(harness: Harness) -> tuple[SubscriptionContext, str]:
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    context: SubscriptionContext = harness.app.state.subscriptions
    return context, str(sub["id"])


async def test_a_second_matcher_does_not_match_beside_a_running_one(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, subscription_id = await _subscribed(harness)
    await harness.create(SMITH)
    gate = Gate()
    monkeypatch.setattr(matcher, "append_event", gate.append_event)
    cursor = await context.store.get_record(CURSOR, MATCH_KEY, harness.clock())
    first = asyncio.create_task(match_changes(context))
    try:
        async with asyncio.timeout(10):
            await gate.arrived.wait()
            await match_changes(context)
            assert gate.beside == 0
            assert await context.store.get_record(CURSOR, MATCH_KEY, harness.clock()) == cursor
    finally:
        gate.answer.set()
        await first
    assert await events_so_far(context.store, subscription_id, harness.clock()) == 1
    assert await context.store.get_record(CURSOR, MATCH_KEY, harness.clock()) != cursor


async def test_a_matcher_whose_lock_ran_out_does_not_move_the_cursor_back(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    context, subscription_id = await _subscribed(harness)
    await harness.create(SMITH)
    gate = Gate()
    monkeypatch.setattr(matcher, "append_event", gate.append_event)
    first = asyncio.create_task(match_changes(context))
    try:
        async with asyncio.timeout(10):
            await gate.arrived.wait()
            # The first pauses past its lock; the second takes over and gets further.
            harness.clock.move_to(harness.clock() + LOCK_TIME + timedelta(seconds=1))
            await harness.create(SMITH)
            await match_changes(context)
            moved = await context.store.get_record(CURSOR, MATCH_KEY, harness.clock())
    finally:
        gate.answer.set()
        await first
    assert await context.store.get_record(CURSOR, MATCH_KEY, harness.clock()) == moved
    assert await events_so_far(context.store, subscription_id, harness.clock()) == 2


async def test_two_runners_racing_on_a_subscription_write_match_one_at_a_time(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _subscribed(harness)
    await harness.create(SMITH)
    gate = Gate()
    monkeypatch.setattr(matcher, "append_event", gate.append_event)
    first = harness.jobs
    second = JobRunner(first.store, first.handlers, harness.clock)
    harness.clock.move_to(harness.clock() + timedelta(seconds=2))
    running = asyncio.create_task(first.run_due())
    try:
        async with asyncio.timeout(10):
            await gate.arrived.wait()
            # A Subscription write while the first matches puts the MATCH job again.
            await harness.create(
                criteria_subscription(harness.receiver.url + "/other", "Patient?family=smith")
            )
            await second.run_due()
            assert gate.beside == 0
    finally:
        gate.answer.set()
        await running
    # Matching goes on: the patient is notified once, and a later write to both.
    await harness.run_jobs()
    assert [r.path for r in harness.receiver.received] == ["/"]
    await harness.create(SMITH)
    await harness.run_jobs()
    assert sorted(r.path for r in harness.receiver.received) == ["/", "/", "/other"]
