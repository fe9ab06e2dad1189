"""Review findings on delivery (R4 subscription.html "rest-hook"; DESIGN.md "Side
effects and external calls": an event recorded is delivered, at least once)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhirserver.subscriptions import delivery, events, matcher
from fhirserver.subscriptions.model import read_subscription
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


@pytest.mark.parametrize(
    "header", ["X-Tenant: clinic-\u00e9", "X-Tenant: a\u2028b", "X-T\u00e9nant: a"]
)
async def test_a_header_that_cannot_be_sent_is_a_delivery_failure(
    harness: Harness, header: str
) -> None:
    """Review bug #6: a `channel.header` stored before the write check that httpx cannot
    encode is a failed delivery (retried, then `error`), not an endless crash-retry."""
    resource = criteria_subscription(harness.receiver.url, "Patient?family=smith", header=[header])
    spec = read_subscription({**resource, "id": "x"})
    context = harness.app.state.subscriptions
    with pytest.raises(delivery.DeliveryFailed):
        await delivery.post(context, spec, "POST", spec.endpoint, None)
    assert harness.receiver.received == []


async def test_stored_reserved_headers_are_not_sent(harness: Harness) -> None:
    """Review bug #6: neither Host nor the signature can be set by `channel.header`."""
    headers = ["Host: evil.example", "x-signature: sha256=forged", "X-Tenant: a"]
    resource = criteria_subscription(harness.receiver.url, "Patient?family=smith", header=headers)
    spec = read_subscription({**resource, "id": "x"})
    context = harness.app.state.subscriptions
    await delivery.post(context, spec, "POST", spec.endpoint, None)
    [got] = harness.receiver.received
    assert got.headers["host"] != "evil.example"
    assert "x-signature" not in got.headers
    assert got.headers["x-tenant"] == "a"
