"""Subscription writes that need a fresh handshake or are refused: R4 subscription.html
"status" (the server decides `active`); Subscriptions Backport IG 1.1.0 "Handshake" (a
topic rest-hook subscription whose endpoint, or what the endpoint receives, changes
goes back to `requested` and is handshaken again); README "Subscriptions" (a channel is
marked `subscription-signed` only by registering a secret)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fhirserver.subscriptions.signing import SIGNED
from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription

SECRET = "a-secret-for-the-receiver"
_CONTENT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def _signed_mark(sub: dict[str, Any]) -> dict[str, Any]:
    sub["channel"]["extension"] = [{"url": SIGNED, "valueBoolean": True}]
    return sub


def _issue_expression(response: Any) -> str:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0].get("expression", [""])[0])


async def _put(harness: Harness, sub: dict[str, Any]) -> dict[str, Any]:
    response = await harness.http.put(f"/Subscription/{sub['id']}", json=sub)
    assert response.status_code == 200, response.text
    written: dict[str, Any] = response.json()
    return written


async def test_a_signed_mark_without_a_secret_is_refused(harness: Harness) -> None:
    receiver = harness.receiver
    # On create: it would wait for a secret for ever.
    response = await harness.http.post(
        "/Subscription",
        json=_signed_mark(criteria_subscription(receiver.url, "Patient?family=smith")),
    )
    assert response.status_code == 422
    assert _issue_expression(response) == f"Subscription.channel.extension('{SIGNED}')"
    # On update of an unsigned subscription: the same, and the stored one is untouched.
    created = await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    response = await harness.http.put(
        f"/Subscription/{created['id']}", json=_signed_mark(dict(created))
    )
    assert response.status_code == 422
    assert "extension" not in (await harness.read(f"/Subscription/{created['id']}"))["channel"]
    # Delivery goes on unsigned (it does not wait).
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    [got] = receiver.received
    assert "x-signature" not in got.headers


async def test_a_signed_subscription_written_back_or_given_a_new_secret_stays_signed(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    sub = criteria_subscription(
        receiver.url, "Patient?family=smith", header=[f"X-Subscription-Secret: {SECRET}"]
    )
    created = await harness.create(sub)
    assert (await _put(harness, created))["channel"]["extension"][0]["url"] == SIGNED
    renewed = dict(created)
    renewed["channel"] = {**created["channel"], "header": ["X-Subscription-Secret: another"]}
    await _put(harness, renewed)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    [got] = receiver.received
    assert got.headers["x-signature"].startswith("sha256=")


async def _active_topic(harness: Harness, endpoint: str) -> dict[str, Any]:
    created = await harness.create(topic_subscription(endpoint))
    await harness.run_jobs()
    sub = await harness.read(f"/Subscription/{created['id']}")
    assert sub["status"] == "active"
    return sub


def _kinds(harness: Harness, path: str) -> list[str]:
    kinds = []
    for got in harness.receiver.received:
        if got.path == path:
            parameters = got.json()["entry"][0]["resource"]["parameter"]
            kinds += [p["valueCode"] for p in parameters if p["name"] == "type"]
    return kinds


async def test_a_new_endpoint_is_handshaken_again(harness: Harness) -> None:
    sub = await _active_topic(harness, harness.receiver.url + "/one")
    sub["channel"]["endpoint"] = harness.receiver.url + "/two"
    written = await _put(harness, sub)
    assert written["status"] == "requested"
    await harness.run_jobs()
    assert _kinds(harness, "/two") == ["handshake"]
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"


async def test_a_new_payload_content_or_header_is_handshaken_again(harness: Harness) -> None:
    sub = await _active_topic(harness, harness.receiver.url + "/one")
    sub["channel"]["_payload"]["extension"][0]["valueCode"] = "full-resource"
    assert (await _put(harness, sub))["status"] == "requested"
    await harness.run_jobs()
    sub = await harness.read(f"/Subscription/{sub['id']}")
    sub["channel"]["header"] = ["Authorization: Bearer other"]
    assert (await _put(harness, sub))["status"] == "requested"
    await harness.run_jobs()
    assert _kinds(harness, "/one") == ["handshake"] * 3
    # What the endpoint receives unchanged: still active, no handshake.
    sub = await harness.read(f"/Subscription/{sub['id']}")
    sub["reason"] = "another reason"
    assert (await _put(harness, sub))["status"] == "active"


async def _in_error(harness: Harness, sub: dict[str, Any]) -> dict[str, Any]:
    """`sub` created, its endpoint refusing for 30 hours: in `error`."""
    harness.receiver.status = 500
    created = await harness.create(sub)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    for _ in range(30):
        await harness.later(timedelta(hours=1))
    found = await harness.read(f"/Subscription/{created['id']}")
    assert found["status"] == "error"
    return found


async def test_an_errored_criteria_subscription_turned_on_is_probed_not_given_a_new_window(
    harness: Harness,
) -> None:
    """R4 "status": the server decides `active`. A criteria subscription has no handshake:
    the probe is the delivery it failed; failing again, it is in error again at once."""
    receiver = harness.receiver
    sub = await _in_error(harness, criteria_subscription(receiver.url, "Patient?family=smith"))
    sub["status"] = "active"
    await _put(harness, sub)
    tries = receiver.refused
    await harness.run_jobs()
    assert receiver.refused == tries + 1
    found = await harness.read(f"/Subscription/{sub['id']}")
    assert found["status"] == "error" and "500" in found["error"]


async def test_an_errored_criteria_subscription_whose_events_expired_delivers_new_ones(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    sub = await _in_error(harness, criteria_subscription(receiver.url, "Patient?family=smith"))
    await harness.later(timedelta(days=8))  # its undelivered event expired meanwhile
    receiver.status = 200
    sub["status"] = "active"
    await _put(harness, sub)
    await harness.run_jobs()
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    assert len(receiver.received) == 1
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"


async def test_an_errored_topic_subscription_turned_on_is_requested_and_handshaken(
    harness: Harness,
) -> None:
    receiver = harness.receiver
    sub = await _in_error(harness, topic_subscription(receiver.url))
    receiver.status = 200
    sub["status"] = "active"
    assert (await _put(harness, sub))["status"] == "requested"
    await harness.run_jobs()
    assert _kinds(harness, "/") == ["handshake"]
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"
