"""rest-hook delivery from the change log (R4 subscription.html "rest-hook": an empty
POST without `payload`, the resource PUT to [endpoint]/[type]/[id] with it;
`channel.header` sent), at least once, retried with backoff over the retry window,
then `error` (issue 15 "Durable delivery")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.subscriptions.conftest import Harness, criteria_subscription


def _patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


async def test_matching_writes_are_notified_with_an_empty_post(harness: Harness) -> None:
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url + "/hook", "Patient?family=smith"))
    await harness.create(_patient("jones"))
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert [(r.method, r.path, r.body) for r in receiver.received] == [("POST", "/hook", b"")]


async def test_payload_puts_the_resource_and_headers_are_sent(harness: Harness) -> None:
    receiver = harness.receiver
    sub = criteria_subscription(
        receiver.url + "/base",
        "Patient?family=smith",
        payload="application/fhir+json",
        header=["Authorization: Bearer abc", "X-Tenant: clinic-1"],
    )
    await harness.create(sub)
    patient = await harness.create(_patient("smith"))
    await harness.run_jobs()
    [got] = receiver.received
    assert (got.method, got.path) == ("PUT", f"/base/Patient/{patient['id']}")
    assert got.headers["authorization"] == "Bearer abc"
    assert got.headers["x-tenant"] == "clinic-1"
    assert got.headers["content-type"].startswith("application/fhir+json")
    assert got.json()["name"] == [{"family": "smith"}]


async def test_each_event_is_delivered_in_order(harness: Harness) -> None:
    receiver = harness.receiver
    sub = criteria_subscription(
        receiver.url, "Patient?family=smith", payload="application/fhir+json"
    )
    await harness.create(sub)
    ids = [(await harness.create(_patient("smith")))["id"] for _ in range(5)]
    await harness.run_jobs()
    assert [r.path.rsplit("/", 1)[-1] for r in receiver.received] == ids


async def test_an_endpoint_down_for_a_while_gets_the_event_once_it_is_up(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    await harness.create(_patient("smith"))
    receiver.status = 503
    await harness.run_jobs()
    assert receiver.refused >= 1 and receiver.received == []
    refused = receiver.refused
    # Backoff: nothing is tried again at once.
    await harness.jobs.run_due()
    assert receiver.refused == refused
    await harness.later(timedelta(minutes=5))
    assert receiver.refused > refused
    receiver.status = 200
    await harness.later(timedelta(hours=1))
    await harness.later(timedelta(hours=1))
    assert len(receiver.received) == 1
    sub = (await harness.read("/Subscription"))["entry"][0]["resource"]
    assert sub["status"] == "active"


async def test_redirects_are_not_followed(harness: Harness) -> None:
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    receiver.status = 307
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert receiver.refused == 1 and receiver.received == []


async def _failed_past_the_window(harness: Harness) -> dict[str, Any]:
    """A subscription whose endpoint refused one event for 30 hours: in `error`."""
    receiver = harness.receiver
    created = await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    receiver.status = 500
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    for _ in range(30):
        await harness.later(timedelta(hours=1))
    sub = await harness.read(f"/Subscription/{created['id']}")
    assert sub["status"] == "error"
    return sub


async def test_past_the_retry_window_the_subscription_is_in_error(harness: Harness) -> None:
    receiver = harness.receiver
    sub = await _failed_past_the_window(harness)
    assert "500" in sub["error"]
    tries = receiver.refused
    await harness.create(_patient("smith"))
    await harness.later(timedelta(hours=1))
    assert receiver.refused == tries  # no more deliveries to a subscription in error


async def test_nothing_is_delivered_after_end_and_the_subscription_turns_off(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    sub = criteria_subscription(receiver.url, "Patient?family=smith")
    sub["end"] = (harness.clock() + timedelta(hours=1)).isoformat()
    created = await harness.create(sub)
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert len(receiver.received) == 1
    harness.clock.move_to(harness.clock() + timedelta(hours=2))
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert len(receiver.received) == 1
    assert (await harness.read(f"/Subscription/{created['id']}"))["status"] == "off"


async def test_a_subscription_in_error_turned_on_again_delivers_what_is_left(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    sub = await _failed_past_the_window(harness)
    receiver.status = 200
    sub["status"] = "active"
    response = await harness.http.put(f"/Subscription/{sub['id']}", json=sub)
    assert response.status_code == 200
    assert response.json()["status"] == "active" and "error" not in response.json()
    await harness.run_jobs()
    assert len(receiver.received) == 1
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert len(receiver.received) == 2


async def test_events_past_retention_are_skipped_and_later_ones_delivered(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    receiver.status = 503
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    # Down for longer than events are kept (7 days), but the subscription turned off and
    # on again in between so that it is not in error.
    harness.clock.move_to(harness.clock() + timedelta(days=8))
    receiver.status = 200
    sub = (await harness.read("/Subscription"))["entry"][0]["resource"]
    sub["status"] = "off"
    await harness.http.put(f"/Subscription/{sub['id']}", json=sub)
    sub["status"] = "active"
    await harness.http.put(f"/Subscription/{sub['id']}", json=sub)
    await harness.create(_patient("smith"))
    await harness.run_jobs()
    assert len(receiver.received) == 1
