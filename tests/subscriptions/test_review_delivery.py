"""Review findings on delivery (R4 subscription.html "rest-hook"; DESIGN.md "Side
effects and external calls": an event recorded is delivered, at least once)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhirserver.subscriptions import matcher
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
