"""A failed heartbeat counts as a failed delivery (Backport IG 1.1.0 "Heartbeat": the
subscriber hears from the server at least every period; R4 subscription.html: a
subscription whose notifications keep failing goes to `error`). A topic subscription
whose endpoint died is retried with backoff, not every period for ever, and is `error`
once the retry window has passed; an endpoint back in time clears the failure."""

from __future__ import annotations

from datetime import timedelta

from tests.subscriptions.conftest import Harness, topic_subscription


async def test_a_dead_endpoint_with_heartbeats_ends_in_error(harness: Harness) -> None:
    sub = await harness.create(topic_subscription(harness.receiver.url, heartbeat=10))
    await harness.run_jobs()
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"
    harness.receiver.status = 503
    for _ in range(30):  # past the 24 h retry window
        await harness.later(timedelta(hours=1))
    found = await harness.read(f"/Subscription/{sub['id']}")
    assert found["status"] == "error"
    assert "heartbeat" in found["error"] or "503" in found["error"]
    tries = harness.receiver.refused
    # No more tries once in error.
    for _ in range(3):
        await harness.later(timedelta(hours=1))
    assert harness.receiver.refused == tries


async def test_heartbeats_resume_once_the_endpoint_is_back(harness: Harness) -> None:
    sub = await harness.create(topic_subscription(harness.receiver.url, heartbeat=10))
    await harness.run_jobs()
    harness.receiver.status = 503
    await harness.later(timedelta(seconds=30))
    assert harness.receiver.refused >= 1
    harness.receiver.status = 200
    before = len(harness.receiver.received)
    for _ in range(5):
        await harness.later(timedelta(minutes=1))
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"
    assert len(harness.receiver.received) > before
