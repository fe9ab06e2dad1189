"""Topic-based subscriptions over rest-hook (Subscriptions R5 Backport IG 1.1.0:
"Handshake", "Heartbeat", notification Bundles of type `history` whose first entry is
the subscription-status Parameters, `eventsSinceSubscriptionStart` numbering,
`backport-filter-criteria`, `backport-max-count`, payload content)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.subscriptions.conftest import Harness, topic_subscription


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    values: dict[str, Any] = {}
    for p in parameters["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        values.setdefault(p["name"], []).append(value)
    return values


def _encounter(status: str, patient: str = "Patient/1") -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
        "subject": {"reference": patient},
    }


async def _active(harness: Harness, resource: dict[str, Any]) -> dict[str, Any]:
    created = await harness.create(resource)
    assert created["status"] == "requested"
    await harness.run_jobs()
    sub = await harness.read(f"/Subscription/{created['id']}")
    assert sub["status"] == "active"
    return sub


async def test_handshake_then_active_then_numbered_event_notifications(harness: Harness) -> None:
    receiver = harness.receiver
    sub = await _active(harness, topic_subscription(receiver.url + "/notify"))
    [handshake] = receiver.received
    assert _status(handshake.json())["type"] == ["handshake"]
    # Not a trigger: created planned, then a trigger: updated to in-progress.
    planned = await harness.create(_encounter("planned"))
    await harness.run_jobs()
    assert len(receiver.received) == 1
    planned["status"] = "in-progress"
    response = await harness.http.put(f"/Encounter/{planned['id']}", json=planned)
    assert response.status_code == 200
    await harness.create(_encounter("in-progress"))
    await harness.run_jobs()
    notifications = [r.json() for r in receiver.received[1:]]
    assert [_status(n)["type"] for n in notifications] == [
        ["event-notification"],
        ["event-notification"],
    ]
    numbers = [_status(n)["events-since-subscription-start"] for n in notifications]
    assert numbers == [["1"], ["2"]]
    first = notifications[0]
    assert _status(first)["subscription"][0]["reference"].endswith(f"Subscription/{sub['id']}")
    # id-only: the focus is named, not sent.
    assert first["entry"][1]["fullUrl"].endswith(f"Encounter/{planned['id']}")
    assert "resource" not in first["entry"][1]


async def test_filters_narrow_and_full_resource_carries_the_focus(harness: Harness) -> None:
    receiver = harness.receiver
    await _active(
        harness,
        topic_subscription(
            receiver.url, filters=("Encounter?subject=Patient/2",), content="full-resource"
        ),
    )
    await harness.create(_encounter("in-progress", "Patient/1"))
    mine = await harness.create(_encounter("in-progress", "Patient/2"))
    await harness.run_jobs()
    [_, notification] = receiver.received
    entries = notification.json()["entry"]
    assert entries[1]["resource"]["id"] == mine["id"]


async def test_max_count_batches_events(harness: Harness) -> None:
    receiver = harness.receiver
    await _active(harness, topic_subscription(receiver.url, max_count=10))
    receiver.status = 503
    for _ in range(3):
        await harness.create(_encounter("in-progress"))
    await harness.run_jobs()
    receiver.status = 200
    await harness.later(timedelta(minutes=1))
    [_, notification] = receiver.received
    events = _status(notification.json())["notification-event"]
    assert len(events) == 3


async def test_heartbeats_at_the_requested_period(harness: Harness) -> None:
    receiver = harness.receiver
    await _active(harness, topic_subscription(receiver.url, heartbeat=60))
    await harness.later(timedelta(seconds=30))
    assert len(receiver.received) == 1
    await harness.later(timedelta(seconds=40))
    kinds = [_status(r.json())["type"] for r in receiver.received]
    assert kinds == [["handshake"], ["heartbeat"]]


async def test_a_failing_handshake_ends_in_error(harness: Harness) -> None:
    receiver = harness.receiver
    receiver.status = 500
    created = await harness.create(topic_subscription(receiver.url))
    await harness.run_jobs()
    assert (await harness.read(f"/Subscription/{created['id']}"))["status"] == "requested"
    for _ in range(30):
        await harness.later(timedelta(hours=1))
    sub = await harness.read(f"/Subscription/{created['id']}")
    assert sub["status"] == "error"
    assert "handshake" in sub["error"]


async def test_entries_record_the_interaction_and_empty_names_nothing(harness: Harness) -> None:
    """Backport IG R4 examples: the status Parameters carry the status profile; an
    event's entry records what made it (a create is `POST Encounter`, 201; an update
    `PUT Encounter/id`, 200); an `empty` payload names neither topic nor focus."""
    receiver = harness.receiver
    await _active(harness, topic_subscription(receiver.url, content="full-resource"))
    created = await harness.create(_encounter("in-progress"))
    planned = await harness.create(_encounter("planned"))
    planned["status"] = "in-progress"
    assert (await harness.http.put(f"/Encounter/{planned['id']}", json=planned)).is_success
    await harness.run_jobs()
    [_, on_create, on_update] = [r.json() for r in receiver.received]
    status = on_create["entry"][0]["resource"]
    assert status["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
        "backport-subscription-status-r4"
    ]
    assert on_create["entry"][1]["request"] == {"method": "POST", "url": "Encounter"}
    assert on_create["entry"][1]["response"]["status"] == "201"
    assert on_create["entry"][1]["resource"]["id"] == created["id"]
    assert on_update["entry"][1]["request"] == {
        "method": "PUT",
        "url": f"Encounter/{planned['id']}",
    }

    receiver.received.clear()
    empty = await _active(harness, topic_subscription(receiver.url, content="empty"))
    await harness.create(_encounter("in-progress"))
    await harness.run_jobs()
    # The first subscription is notified of this Encounter too: take the empty one's.
    [notification] = [
        r.json()
        for r in receiver.received
        if _status(r.json())["subscription"][0]["reference"].endswith(empty["id"])
        and _status(r.json())["type"] == ["event-notification"]
    ]
    values = _status(notification)
    assert "topic" not in values
    assert len(notification["entry"]) == 1
    [event] = values["notification-event"]
    assert [part["name"] for part in event] == ["event-number", "timestamp"]
