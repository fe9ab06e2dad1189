"""A Subscription deleted and created again under its id is a new subscription
(Subscriptions Backport IG 1.1.0 "Notification events": `eventsSinceSubscriptionStart`
counts from the subscription's start, so it restarts at 1; `$events`,
OperationDefinition backport-subscription-events, replays only its own events) and
signs with its own secret, never the old one (README "Subscriptions")."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tests.subscriptions.conftest import Harness, topic_subscription

OLD_SECRET, NEW_SECRET = "the-old-secret", "the-new-secret"


def _parameters(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for p in bundle["entry"][0]["resource"]["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        values.setdefault(p["name"], []).append(value)
    return values


def _numbers(bundle: dict[str, Any]) -> list[str]:
    return [
        part["valueString"]
        for event in _parameters(bundle).get("notification-event", [])
        for part in event
        if part["name"] == "event-number"
    ]


def _signed_by(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _signed_subscription(harness: Harness, secret: str) -> dict[str, Any]:
    sub = topic_subscription(harness.receiver.url)
    sub["channel"]["header"] = [f"X-Subscription-Secret: {secret}"]
    return sub


async def _encounter_started(harness: Harness) -> None:
    await harness.create(
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
            "subject": {"reference": "Patient/1"},
        }
    )
    await harness.run_jobs()


async def test_a_subscription_created_again_starts_afresh(harness: Harness) -> None:
    receiver = harness.receiver
    old = await harness.create(_signed_subscription(harness, OLD_SECRET))
    await harness.run_jobs()
    await _encounter_started(harness)
    await _encounter_started(harness)
    assert [_numbers(r.json()) for r in receiver.received[1:]] == [["1"], ["2"]]
    read_back = await harness.read(f"/Subscription/{old['id']}")
    assert (await harness.http.delete(f"/Subscription/{old['id']}")).status_code in (200, 204)

    # Created again from what was read: the signed mark without a secret is refused, so
    # the old secret is never taken for the new subscription.
    response = await harness.http.put(f"/Subscription/{old['id']}", json=read_back)
    assert response.status_code == 422, response.text
    new = _signed_subscription(harness, NEW_SECRET)
    new["id"] = old["id"]
    response = await harness.http.put(f"/Subscription/{old['id']}", json=new)
    assert response.status_code == 201, response.text
    receiver.received.clear()
    await harness.run_jobs()
    await _encounter_started(harness)
    handshake, notified = receiver.received
    assert _parameters(handshake.json())["events-since-subscription-start"] == ["0"]
    assert _parameters(notified.json())["events-since-subscription-start"] == ["1"]
    assert _numbers(notified.json()) == ["1"]
    for got in (handshake, notified):
        assert got.headers["x-signature"] == _signed_by(NEW_SECRET, got.body)

    events = await harness.read(f"/Subscription/{old['id']}/$events")
    assert _parameters(events)["events-since-subscription-start"] == ["1"]
    assert _numbers(events) == ["1"]
    assert len(events["entry"]) == 2  # the status and the one new event's focus
    status = await harness.read(f"/Subscription/{old['id']}/$status")
    assert _parameters(status)["events-since-subscription-start"] == ["1"]


async def test_an_incarnation_a_client_sends_is_not_taken(harness: Harness) -> None:
    """The incarnation is the server's: a subscription created again from the body read
    before the delete (its old incarnation in it) is still a new one."""
    receiver = harness.receiver
    old = await harness.create(topic_subscription(receiver.url))
    await harness.run_jobs()
    await _encounter_started(harness)
    read_back = await harness.read(f"/Subscription/{old['id']}")
    assert (await harness.http.delete(f"/Subscription/{old['id']}")).status_code in (200, 204)
    response = await harness.http.put(f"/Subscription/{old['id']}", json=read_back)
    assert response.status_code == 201, response.text
    assert response.json()["extension"] != read_back["extension"]
    # A client's update keeps the server's incarnation, whatever it sends.
    again = {**response.json(), "extension": read_back["extension"]}
    response = await harness.http.put(f"/Subscription/{old['id']}", json=again)
    assert response.status_code == 200, response.text
    receiver.received.clear()
    await harness.run_jobs()
    await _encounter_started(harness)
    assert [_numbers(r.json()) for r in receiver.received] == [[], ["1"]]
