"""Subscription `$events` and the server's own status changes (Subscriptions R5
Backport IG 1.1.0 OperationDefinition `backport-subscription-events`; R4
operations.html#executing, subscription.html "status")."""

from __future__ import annotations

import pytest

from tests.subscriptions.conftest import Harness, criteria_subscription


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
