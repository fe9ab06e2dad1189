"""A topic's `notificationShape` in its notifications (Subscriptions R5 Backport IG 1.1.0
"Payloads" (payloads.html), StructureDefinition backport-subscription-status-r4:
`notification-event.additional-context`; R5 subscriptiontopic.html
`notificationShape.include`): `full-resource` carries the resources the topic's
`include`s reach as `additional-context` references and as Bundle entries, `id-only`
the references only, `empty` neither; and only what the subscriber may read
(DESIGN.md "Authorization")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.clock import MovableClock
from tests.conftest import FHIR_JSON
from tests.rest.token_apps import access, authenticator, bearer
from tests.subscriptions.conftest import START, topic_subscription
from tests.subscriptions.receiver import Receiver, serving

BOOKED = "http://fhirserver.dev/fhir/SubscriptionTopic/appointment-booked"
# May read appointments (and manage its subscriptions) but no patient.
NO_PATIENTS = "appointments-only"


@dataclass
class Server:
    http: httpx.AsyncClient
    clock: MovableClock
    run_due: Any
    receiver: Receiver

    async def create(self, resource: dict[str, Any], token: str = "admin") -> dict[str, Any]:
        response = await self.http.post(
            f"/{resource['resourceType']}", json=resource, headers=bearer(token)
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def run_jobs(self) -> None:
        for _ in range(3):
            await self.run_due()
            self.clock.move_to(self.clock() + timedelta(seconds=2))


@pytest.fixture
async def server(settings: Settings, test_backend: Backend) -> AsyncIterator[Server]:
    tokens = {NO_PATIENTS: access("system/Appointment.rs system/Subscription.cruds")}
    clock = MovableClock()
    clock.move_to(START)
    # The shipped telehealth topics (extensions/Basic-SubscriptionTopic-*.json).
    app = create_app(
        settings, store=test_backend.store, clock=clock, authenticator=authenticator(tokens)
    )
    async with serving(Receiver()) as receiver, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir", headers={"Accept": FHIR_JSON}
        ) as http:
            yield Server(http, clock, app.state.jobs.run_due, receiver)


async def _notified(server: Server, content: str, token: str = "admin") -> dict[str, Any]:
    """The event notification of a booked appointment of a patient and a practitioner,
    to a subscription on appointment-booked with `content`."""
    subscription = topic_subscription(server.receiver.url, content=content)
    subscription["criteria"] = BOOKED
    await server.create(subscription, token)
    await server.run_jobs()
    patient = await server.create({"resourceType": "Patient", "name": [{"family": "Ng"}]})
    doctor = await server.create({"resourceType": "Practitioner", "name": [{"family": "Ho"}]})
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2031-03-02T10:00:00Z",
        "end": "2031-03-02T10:30:00Z",
        "participant": [
            {"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{doctor['id']}"}, "status": "accepted"},
        ],
    }
    booked = await server.create(appointment)
    await server.run_jobs()
    [bundle] = [
        b
        for b in (r.json() for r in server.receiver.received)
        if _parameters(b)["type"] == ["event-notification"]
    ]
    bundle["test"] = {"patient": patient, "doctor": doctor, "appointment": booked}
    return bundle


def _parameters(bundle: dict[str, Any]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {}
    for p in bundle["entry"][0]["resource"]["parameter"]:
        value = next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
        values.setdefault(p["name"], []).append(value)
    return values


def _context(bundle: dict[str, Any]) -> list[str]:
    [event] = _parameters(bundle)["notification-event"]
    return [
        _relative(p["valueReference"]["reference"])
        for p in event
        if p["name"] == "additional-context"
    ]


def _relative(url: str) -> str:
    """`Type/id` of an absolute URL against the server's configured base."""
    return "/".join(url.rsplit("/", 2)[-2:])


def _url(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


async def test_full_resource_carries_the_patient_as_context_and_entry(server: Server) -> None:
    bundle = await _notified(server, "full-resource")
    patient, doctor = bundle["test"]["patient"], bundle["test"]["doctor"]
    # appointment-booked's shape: Appointment:patient and Appointment:actor; the patient
    # is reached by both and named once.
    context = _context(bundle)
    assert sorted(context) == sorted([_url(patient), _url(doctor)])
    entries = {_relative(e["fullUrl"]): e for e in bundle["entry"][1:]}
    assert entries[_url(patient)]["resource"]["id"] == patient["id"]
    assert entries[_url(patient)]["request"] == {
        "method": "GET",
        "url": f"Patient/{patient['id']}",
    }
    assert entries[_url(doctor)]["resource"]["resourceType"] == "Practitioner"
    assert len(bundle["entry"]) == 4  # status, focus, patient, practitioner


async def test_id_only_carries_the_references_only(server: Server) -> None:
    bundle = await _notified(server, "id-only")
    patient = bundle["test"]["patient"]
    assert _url(patient) in _context(bundle)
    assert not [e for e in bundle["entry"][1:] if "resource" in e]


async def test_empty_carries_neither(server: Server) -> None:
    bundle = await _notified(server, "empty")
    assert _context(bundle) == []
    assert len(bundle["entry"]) == 1


async def test_only_what_the_subscriber_may_read(server: Server) -> None:
    bundle = await _notified(server, "full-resource", NO_PATIENTS)
    # The focus is notified (its owner may read appointments), its patient and
    # practitioner are not.
    assert bundle["entry"][1]["resource"]["resourceType"] == "Appointment"
    assert _context(bundle) == []
    assert len(bundle["entry"]) == 2
