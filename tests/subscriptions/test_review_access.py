"""`$events` shows a caller only what that caller may read (Subscriptions R5 Backport
IG 1.1.0 OperationDefinition `backport-subscription-events`; DESIGN.md
"Authorization"; SMART App Launch 2.x "Scopes"): reading the Subscription is not
reading its events' focus resources, and `content` asks no more than the
subscription's own payload content."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.clock import MovableClock
from tests.rest.token_apps import access, authenticator, bearer
from tests.subscriptions.conftest import START

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SECRET = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "HIV viral load"},
    "valueString": "SECRET",
}


def _subscription(content: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "review",
        "criteria": "Observation?status=final",
        "channel": {
            "type": "websocket",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
            },
        },
    }


@pytest.fixture
async def http(settings: Settings, test_backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    tokens = {
        "owner": access("system/Observation.cruds system/Subscription.cruds"),
        "snoop": access("system/Subscription.rs"),
    }
    clock = MovableClock()
    clock.move_to(START)
    app = create_app(
        settings, store=test_backend.store, clock=clock, authenticator=authenticator(tokens)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir"
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            client.clock = clock  # type: ignore[attr-defined]
            yield client


async def _with_event(http: httpx.AsyncClient, content: str) -> str:
    created = await http.post("/Subscription", json=_subscription(content), headers=bearer("owner"))
    assert created.status_code == 201, created.text
    made = await http.post("/Observation", json=SECRET, headers=bearer("owner"))
    assert made.status_code == 201, made.text
    for _ in range(3):
        await http.app.state.jobs.run_due()  # type: ignore[attr-defined]
        clock: MovableClock = http.clock  # type: ignore[attr-defined]
        clock.move_to(clock() + timedelta(seconds=2))
    return str(created.json()["id"])


def _focus_entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return list(bundle.get("entry", [])[1:])


async def test_events_show_the_focus_only_to_a_caller_who_may_read_it(
    http: httpx.AsyncClient,
) -> None:
    sid = await _with_event(http, "full-resource")
    owner = await http.get(f"/Subscription/{sid}/$events", headers=bearer("owner"))
    assert owner.status_code == 200, owner.text
    assert [e["resource"]["valueString"] for e in _focus_entries(owner.json())] == ["SECRET"]
    snoop = await http.get(f"/Subscription/{sid}/$events", headers=bearer("snoop"))
    assert snoop.status_code == 200, snoop.text
    assert _focus_entries(snoop.json()) == []
    assert "SECRET" not in snoop.text and "Observation/" not in snoop.text


@pytest.mark.parametrize(("own", "asked"), [("id-only", "full-resource"), ("empty", "id-only")])
async def test_content_asks_no_more_than_the_subscription_own(
    http: httpx.AsyncClient, own: str, asked: str
) -> None:
    sid = await _with_event(http, own)
    response = await http.get(
        f"/Subscription/{sid}/$events?content={asked}", headers=bearer("owner")
    )
    assert response.status_code == 400, response.text
    assert "SECRET" not in response.text
    less = await http.get(f"/Subscription/{sid}/$events?content=empty", headers=bearer("owner"))
    assert less.status_code == 200, less.text
