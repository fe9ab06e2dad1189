"""Review findings on delivery (R4 subscription.html "rest-hook"; DESIGN.md "Side
effects and external calls": an event recorded is delivered, at least once)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhirserver.subscriptions import delivery, events, matcher
from tests.subscriptions.conftest import Harness, criteria_subscription


async def test_a_crash_between_recording_and_scheduling_loses_no_delivery(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review bug #3: the matcher records the event, then dies before it writes the
    DELIVER job; the redo finds the event recorded already and must still schedule it."""
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url + "/hook", "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    real = matcher.in_backoff
    crashes = [True]

    async def crash_once(*args: object) -> bool:
        if crashes:
            crashes.pop()
            raise RuntimeError("killed after recording")
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(matcher, "in_backoff", crash_once)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs(rounds=1)
    assert not crashes, "the matcher did not get to the crash"
    assert receiver.received == []
    await harness.later(timedelta(minutes=1))
    assert [(r.method, r.path) for r in receiver.received] == [("POST", "/hook")]


async def test_an_event_whose_count_lands_mid_delivery_is_sent_not_skipped(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flaky test_two_runners_racing_deliver_each_event_once: the matcher writes an
    event, then its count; a delivery that read the old count for its events and the
    new one for its "events past retention" check skipped the event unsent."""
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url + "/hook", "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    real_note, real_count = events._note_count, events.events_so_far
    deferred: list[tuple[Any, ...]] = []
    state = {"defer": True, "delivering": False}

    async def note_later(*args: Any) -> None:
        if state["defer"]:
            state["defer"] = False
            deferred.append(args)
            return
        await real_note(*args)

    async def count_then_land(*args: Any) -> int:
        # The count as it was, and the matcher's count write right after that read.
        got = await real_count(*args)
        if state["delivering"] and deferred:
            await real_note(*deferred.pop())
        return got

    real_deliver = delivery.deliver

    async def delivering(*args: Any, **kwargs: Any) -> None:
        state["delivering"] = True
        await real_deliver(*args, **kwargs)

    monkeypatch.setattr(events, "_note_count", note_later)
    monkeypatch.setattr(events, "events_so_far", count_then_land)
    monkeypatch.setattr(delivery, "events_so_far", count_then_land)
    monkeypatch.setattr(delivery, "deliver", delivering)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    assert not deferred
    await harness.later(timedelta(seconds=5))
    assert [(r.method, r.path) for r in receiver.received] == [("POST", "/hook")]
