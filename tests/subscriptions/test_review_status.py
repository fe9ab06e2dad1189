"""Subscription `$events` and the server's own status changes (Subscriptions R5
Backport IG 1.1.0 OperationDefinition `backport-subscription-events`; R4
operations.html#executing, subscription.html "status")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription


@pytest.mark.parametrize(
    "query",
    [
        "eventsSinceNumber=%C2%B2",
        "eventsUntilNumber=%C2%B2",
        "eventsUntilNumber=" + "9" * 5000,
        "eventsSinceNumber=" + "9" * 5000,
        "eventsSinceNumber=9223372036854775808",
        "eventsSinceNumber=-1",
    ],
)
async def test_events_bad_numbers_are_400(harness: Harness, query: str) -> None:
    """eventsSinceNumber/eventsUntilNumber are integer64 (ASCII digits, at most 2^63-1):
    anything else is a 400, never a 500."""
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=x"))
    response = await harness.http.get(f"/Subscription/{sub['id']}/$events?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Parameters", "parameter": 5},
        {"resourceType": "Parameters", "parameter": [5, "x"]},
        {"resourceType": "Parameters", "parameter": [{"name": "content", "valueCode": 5}]},
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "eventsSinceNumber", "valueString": {}}],
        },
        {"resourceType": "Patient"},
    ],
)
async def test_events_bad_parameters_body_is_400(harness: Harness, body: object) -> None:
    """A POST body must be a Parameters resource whose `parameter` is a list of parameters."""
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=x"))
    response = await harness.http.post(f"/Subscription/{sub['id']}/$events", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_events_good_numbers_still_work(harness: Harness) -> None:
    sub = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=x"))
    response = await harness.http.post(
        f"/Subscription/{sub['id']}/$events",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "eventsSinceNumber", "valueInteger64": "1"},
                {"name": "eventsUntilNumber", "valueString": "3"},
            ],
        },
    )
    assert response.status_code == 200, response.text


# --- The server's own status changes (R4 subscription.html "status") -------------------


async def _handshake_in_flight(harness: Harness) -> tuple[dict[str, Any], asyncio.Task[None]]:
    """A topic subscription whose handshake POST is on its way (the receiver is slow)."""
    harness.receiver.delay = 1.0
    sub = await harness.create(topic_subscription(harness.receiver.url))
    assert sub["status"] == "requested"
    task = asyncio.create_task(harness.jobs.run_due())
    await asyncio.sleep(0.5)
    return sub, task


async def test_a_handshake_never_recreates_a_deleted_subscription(harness: Harness) -> None:
    """The server's `active` is an update of the version it read, not a re-create."""
    sub, task = await _handshake_in_flight(harness)
    deleted = await harness.http.delete(f"/Subscription/{sub['id']}")
    assert deleted.status_code in (200, 204)
    await task
    assert (await harness.http.get(f"/Subscription/{sub['id']}")).status_code == 410


async def test_a_handshake_leaves_a_client_write_in_between_alone(harness: Harness) -> None:
    """A client's `off` written during the handshake stays `off`."""
    sub, task = await _handshake_in_flight(harness)
    put = await harness.http.put(f"/Subscription/{sub['id']}", json={**sub, "status": "off"})
    assert put.status_code == 200, put.text
    await task
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "off"


async def test_a_handshake_without_a_write_in_between_still_activates(harness: Harness) -> None:
    sub = await harness.create(topic_subscription(harness.receiver.url))
    await harness.run_jobs()
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"
