"""The store as the websocket channel's notification source (subscriptions/source.py,
the `NotificationSource` protocol; Backport IG "Notifications", numbered events and
their replay from a number)."""

from __future__ import annotations

from fhirserver.auth.access import Access
from fhirserver.subscriptions.source import StoreNotifications
from tests.subscriptions.conftest import Harness, topic_subscription


async def test_events_replay_from_any_number_as_notification_bundles(harness: Harness) -> None:
    sub = topic_subscription("http://127.0.0.1:9/unused")
    sub["channel"]["type"] = "websocket"
    sub["channel"].pop("endpoint")
    created = await harness.create(sub)
    assert created["status"] == "active"  # a websocket's handshake is on bind
    for _ in range(3):
        await harness.create(
            {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "VR"}}
        )
    await harness.run_jobs()
    source = StoreNotifications(harness.app.state.subscriptions)
    assert await source.events_so_far(created["id"]) == 3
    replay = await source.events_after(created["id"], 1, 10, Access.everything())
    assert [number for number, _ in replay] == [2, 3]
    first = replay[0][1]
    assert first["type"] == "history"
    assert first["entry"][0]["resource"]["resourceType"] == "Parameters"
    handshake = await source.handshake(created["id"])
    assert handshake["entry"][0]["resource"]["parameter"][3]["valueCode"] == "handshake"
    assert await source.subscription("nope") is None
    # Nothing was sent anywhere: a websocket subscription is read, not pushed.
    assert harness.receiver.received == []
