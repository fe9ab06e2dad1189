"""Driving a virtual visit in-process over HTTP, for the telehealth suites: book a
virtual Appointment (its room provisioned by the job runner), read and search, call
`$start-virtual-visit`, and list the visit's AuditEvents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from fhirserver.telehealth.virtual_service import (
    VirtualService,
    channel_type,
    virtual_service,
    with_virtual_service,
)

FHIR = "/fhir"


def appointment(
    status: str = "booked", start: datetime | None = None, channel: str = "livekit"
) -> dict[str, Any]:
    start = start or datetime.now(UTC) + timedelta(minutes=5)
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": status,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": "Patient/p1", "display": "Pat Doe"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
        ],
    }
    return with_virtual_service(resource, VirtualService(channel_type(channel)))


async def book(http: httpx.AsyncClient, app: Starlette, **kwargs: Any) -> dict[str, Any]:
    """A booked virtual Appointment whose room the job runner has provisioned."""
    created = await http.post(f"{FHIR}/Appointment", json=appointment(**kwargs))
    assert created.status_code == 201, created.text
    await app.state.jobs.run_due()
    return await read(http, "Appointment", created.json()["id"])


def meeting_code(appointment: dict[str, Any]) -> str:
    service = virtual_service(appointment)
    assert service is not None and service.meeting_code is not None
    return service.meeting_code


async def read(http: httpx.AsyncClient, kind: str, resource_id: str) -> dict[str, Any]:
    response = await http.get(f"{FHIR}/{kind}/{resource_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def search(http: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    bundle = (await http.get(f"{FHIR}/{query}")).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


async def start(http: httpx.AsyncClient, appointment_id: str, **inputs: Any) -> httpx.Response:
    parameters = [{"name": "practitioner", "valueReference": {"reference": "Practitioner/d1"}}]
    parameters += [{"name": k, "valueString": v} for k, v in inputs.items()]
    return await http.post(
        f"{FHIR}/Appointment/{appointment_id}/$start-virtual-visit",
        json={"resourceType": "Parameters", "parameter": parameters},
    )


def outputs(parameters: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for parameter in parameters["parameter"]:
        values = [v for k, v in parameter.items() if k.startswith("value") or k == "resource"]
        found[parameter["name"]] = values[0]
    return found


async def events(http: httpx.AsyncClient, about: str) -> list[str]:
    found = await search(http, f"AuditEvent?entity={about}&_sort=_lastUpdated&_count=100")
    return [event["subtype"][0]["code"] for event in found]


def http_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Content-Type": "application/fhir+json"},
    )


def consent(
    patient: str = "Patient/p1", category: str = "telehealth", **changes: Any
) -> dict[str, Any]:
    """A Consent of the shape README "Consent" accepts: active, scope treatment, opt-in,
    with the category `telehealth` (the visit) or `telehealth-recording`."""
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "treatment",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {
                        "system": "http://fhirserver.dev/fhir/CodeSystem/consent-category",
                        "code": category,
                    }
                ]
            }
        ],
        "patient": {"reference": patient},
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
    }
    return resource | changes
