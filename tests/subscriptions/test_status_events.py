"""`Subscription/[id]/$status` and `$events` (Subscriptions R5 Backport IG 1.1.0
OperationDefinitions: eventsSinceNumber, eventsUntilNumber, content), and their
authorization: read access to the Subscription (DESIGN.md "Authorization")."""

from __future__ import annotations

from typing import Any

import httpx

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.clock import MovableClock
from tests.rest.token_apps import access, authenticator, bearer
from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription


def _values(parameters: dict[str, Any], name: str) -> list[Any]:
    return [
        next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        for p in parameters["parameter"]
        if p["name"] == name
    ]


async def _with_events(harness: Harness, count: int) -> str:
    created = await harness.create(topic_subscription(harness.receiver.url))
    await harness.run_jobs()
    for _ in range(count):
        await harness.create(
            {
                "resourceType": "Encounter",
                "status": "in-progress",
                "class": {"code": "VR"},
                "subject": {"reference": "Patient/1"},
            }
        )
    await harness.run_jobs()
    return str(created["id"])


async def test_status_reports_the_state_and_the_event_count(harness: Harness) -> None:
    subscription_id = await _with_events(harness, 3)
    bundle = await harness.read(f"/Subscription/{subscription_id}/$status")
    assert bundle["type"] == "searchset"
    [entry] = bundle["entry"]
    parameters = entry["resource"]
    assert _values(parameters, "status") == ["active"]
    assert _values(parameters, "type") == ["query-status"]
    assert _values(parameters, "events-since-subscription-start") == ["3"]


async def test_events_replays_the_numbered_events_asked_for(harness: Harness) -> None:
    subscription_id = await _with_events(harness, 4)
    bundle = await harness.read(
        f"/Subscription/{subscription_id}/$events?eventsSinceNumber=2&eventsUntilNumber=3"
        "&content=full-resource"
    )
    assert bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert _values(status, "type") == ["query-event"]
    numbers = [part[0]["valueString"] for part in _values(status, "notification-event")]
    assert numbers == ["2", "3"]
    assert [e["resource"]["resourceType"] for e in bundle["entry"][1:]] == ["Encounter"] * 2
    everything = await harness.read(f"/Subscription/{subscription_id}/$events")
    assert len(_values(everything["entry"][0]["resource"], "notification-event")) == 4
    bad = await harness.http.get(f"/Subscription/{subscription_id}/$events?eventsSinceNumber=x")
    assert bad.status_code == 400
    unknown = await harness.http.get("/Subscription/nope/$events")
    assert unknown.status_code == 404


async def test_status_and_events_need_read_access_to_the_subscription(
    settings: Settings, test_backend: Backend
) -> None:
    tokens = {"reader": access("system/Subscription.rs"), "other": access("system/Patient.rs")}
    app = create_app(
        settings,
        store=test_backend.store,
        clock=MovableClock(),
        authenticator=authenticator(tokens),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir"
        ) as http:
            sub = {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "auth test",
                "criteria": "Patient?family=x",
                "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
            }
            created = await http.post("/Subscription", json=sub, headers=bearer("admin"))
            assert created.status_code == 201
            path = f"/Subscription/{created.json()['id']}"
            for operation in ("$status", "$events"):
                assert (
                    await http.get(f"{path}/{operation}", headers=bearer("reader"))
                ).status_code == 200
                assert (
                    await http.get(f"{path}/{operation}", headers=bearer("other"))
                ).status_code == 403
                assert (await http.get(f"{path}/{operation}")).status_code == 401


async def test_type_level_status_lists_the_subscriptions_asked_for(harness: Harness) -> None:
    """Backport IG Operations.fsh backport-subscription-status (type = true): `id` and
    `status` each OR'ed; without ids, every Subscription the caller may read."""
    first = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=a"))
    second = await harness.create(criteria_subscription(harness.receiver.url, "Patient?family=b"))
    turned_off = await harness.http.put(
        f"/Subscription/{second['id']}", json={**second, "status": "off"}
    )
    assert turned_off.json()["status"] == "off"

    async def listed(query: str) -> dict[str, str]:
        answer = await harness.http.get(f"/Subscription/$status{query}")
        assert answer.status_code == 200, answer.text
        bundle = answer.json()
        assert bundle["type"] == "searchset"
        found = {}
        for entry in bundle.get("entry", []):
            values = {p["name"]: p for p in entry["resource"]["parameter"]}
            reference = values["subscription"]["valueReference"]["reference"]
            found[reference.rsplit("/", 1)[-1]] = values["status"]["valueCode"]
        return found

    assert await listed("") == {first["id"]: "active", second["id"]: "off"}
    assert await listed(f"?id={first['id']}") == {first["id"]: "active"}
    assert await listed("?status=off") == {second["id"]: "off"}
    assert await listed(f"?id={first['id']}&id=unknown") == {first["id"]: "active"}
    posted = await harness.http.post(
        "/Subscription/$status",
        json={"resourceType": "Parameters", "parameter": [{"name": "status", "valueCode": "off"}]},
    )
    assert posted.status_code == 200 and len(posted.json()["entry"]) == 1
