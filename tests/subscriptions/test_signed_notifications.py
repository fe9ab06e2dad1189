"""Signed rest-hook notifications (issue 15 "Channels": an optional HMAC-SHA256
signature header keyed by a secret the client registers; subscriptions/signing.py):
the secret is registered as the `channel.header` X-Subscription-Secret, never shown
again, and every notification carries `X-Signature: sha256=<hex>` over its body."""

from __future__ import annotations

import hashlib
import hmac

from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription

SECRET = "s3cret-shared-with-the-receiver"


def _expected(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def test_notifications_are_signed_and_the_secret_never_read_back(harness: Harness) -> None:
    receiver = harness.receiver
    sub = criteria_subscription(
        receiver.url,
        "Patient?family=smith",
        payload="application/fhir+json",
        header=[f"X-Subscription-Secret: {SECRET}", "X-Tenant: one"],
    )
    created = await harness.create(sub)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    [got] = receiver.received
    assert got.headers["x-signature"] == _expected(got.body)
    assert got.headers["x-tenant"] == "one"
    assert "x-subscription-secret" not in got.headers
    # Nowhere to be read: the create's answer, a read, a search, the history.
    for path in (
        f"/Subscription/{created['id']}",
        "/Subscription",
        f"/Subscription/{created['id']}/_history",
    ):
        response = await harness.http.get(path)
        assert SECRET not in response.text
    assert SECRET not in str(created)
    # A client writing back what it read keeps the signing.
    read = await harness.read(f"/Subscription/{created['id']}")
    assert (await harness.http.put(f"/Subscription/{created['id']}", json=read)).status_code == 200
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    assert receiver.received[1].headers["x-signature"] == _expected(receiver.received[1].body)


async def test_an_empty_post_and_a_handshake_are_signed_too(harness: Harness) -> None:
    receiver = harness.receiver
    sub = topic_subscription(receiver.url)
    sub["channel"]["header"] = [f"X-Subscription-Secret: {SECRET}"]
    await harness.create(sub)
    await harness.create(
        criteria_subscription(
            receiver.url + "/empty",
            "Patient?family=smith",
            header=[f"x-subscription-secret: {SECRET}"],
        )
    )
    await harness.run_jobs()
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    assert len(receiver.received) == 2
    for got in receiver.received:
        assert got.headers["x-signature"] == _expected(got.body)
