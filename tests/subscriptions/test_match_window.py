"""Which changes a subscription is notified of (R4 subscription.html: notifications are
for changes while the subscription exists and is on; Backport IG 1.1.0 "Handshake").

A subscription counts from the version that began its current run of `requested` /
`active` versions: its creation, its re-creation after a deletion, or its turning on
again after `off` or `error`; an earlier change is not its event, even when the matcher
reaches it only after the subscription came (back). A topic rest-hook sent back to
`requested` (a new endpoint or header) keeps its events while the new handshake runs:
they are recorded and delivered once it is `active` again."""

from __future__ import annotations

from typing import Any

from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


async def test_recreated_subscription_gets_change_from_before_it_existed(harness: Harness) -> None:
    # Another active subscription keeps the matcher alive; it is up to date.
    await harness.create(
        criteria_subscription(harness.receiver.url + "/other", "Observation?code=x")
    )
    sub = criteria_subscription(harness.receiver.url + "/mine", "Patient?family=smith")
    assert (
        await harness.http.put("/Subscription/mine", json={**sub, "id": "mine"})
    ).status_code == 201
    await harness.run_jobs()
    assert (await harness.http.delete("/Subscription/mine")).status_code in (200, 204)
    # Written while no subscription "mine" exists ...
    await harness.create(_patient("smith"))
    # ... and "mine" created again before the matcher's next look (it polls every 1 s).
    r = await harness.http.put("/Subscription/mine", json={**sub, "id": "mine"})
    assert r.status_code == 201, r.text
    await harness.run_jobs()
    got = [x for x in harness.receiver.received if x.path.startswith("/mine")]
    assert got == [], "the new subscription was notified of a change made before it existed"


async def test_change_while_off_delivered_after_turned_on(harness: Harness) -> None:
    await harness.create(
        criteria_subscription(harness.receiver.url + "/other", "Observation?code=x")
    )
    sub = await harness.create(
        criteria_subscription(harness.receiver.url + "/mine", "Patient?family=smith")
    )
    await harness.run_jobs()
    off = await harness.http.put(f"/Subscription/{sub['id']}", json={**sub, "status": "off"})
    assert off.json()["status"] == "off"
    await harness.create(_patient("smith"))  # while off
    on = await harness.http.put(
        f"/Subscription/{sub['id']}", json={**off.json(), "status": "active"}
    )
    assert on.json()["status"] == "active"
    await harness.run_jobs()
    got = [x for x in harness.receiver.received if x.path.startswith("/mine")]
    assert got == [], "a change made while the subscription was off was delivered"


def _encounter() -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
        "subject": {"reference": "Patient/1"},
    }


async def test_header_rotation_loses_events(harness: Harness) -> None:
    sub = await harness.create(topic_subscription(harness.receiver.url))
    await harness.run_jobs()
    current = await harness.read(f"/Subscription/{sub['id']}")
    assert current["status"] == "active"
    current["channel"]["header"] = ["Authorization: Bearer rotated"]
    r = await harness.http.put(f"/Subscription/{sub['id']}", json=current)
    assert r.json()["status"] == "requested"
    harness.receiver.delay = 0.5  # the handshake takes a moment
    await harness.create(_encounter())  # committed while the handshake is under way
    await harness.run_jobs()
    harness.receiver.delay = 0
    await harness.run_jobs()
    assert (await harness.read(f"/Subscription/{sub['id']}"))["status"] == "active"
    status = (await harness.read(f"/Subscription/{sub['id']}/$status"))["entry"][0]["resource"]
    count = [p for p in status["parameter"] if p["name"] == "events-since-subscription-start"]
    assert count[0]["valueString"] == "1", f"the Encounter was never recorded: {count}"
