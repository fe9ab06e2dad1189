"""The waiting room's answer (README "Join by code"): to a code that admits now, who the
visit is with by display name only (R4 Appointment.participant.actor: its display, else
the Practitioner's, PractitionerRole's, RelatedPerson's HumanName or the Location's
name; never the patient, never anything else), and the language to show the page in
(R4 Patient.communication, preferred first; else the Appointment's Resource.language).
"""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette

from tests.telehealth.helpers import FHIR, book, meeting_code


async def put(http: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    path = f"{FHIR}/{resource['resourceType']}/{resource['id']}"
    assert (await http.put(path, json=resource)).status_code in (200, 201)


async def waiting(http: httpx.AsyncClient, booked: dict[str, Any]) -> dict[str, Any]:
    answer = await http.post(f"/join/{meeting_code(booked)}", json={"name": "Pat"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "waiting"
    body: dict[str, Any] = answer.json()
    return body


async def test_the_visit_is_with_its_people_by_display_name(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    await put(
        http,
        {
            "resourceType": "Practitioner",
            "id": "d1",
            "name": [{"family": "One", "given": ["Ann"], "prefix": ["Dr"]}],
            "telecom": [{"system": "phone", "value": "555-0100"}],
        },
    )
    await put(http, {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]})
    booked = await book(http, app)
    answer = await waiting(http, booked)
    assert answer["with"] == ["Dr Ann One"]
    # Display names only: nothing else of the practitioner's or the patient's record.
    assert "555-0100" not in str(answer) and "Doe" not in str(answer)
    assert "language" not in answer


async def test_a_display_on_the_appointment_is_used_as_written(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    participants = booked["participant"] + [
        {
            "actor": {"reference": "Location/room-3", "display": "Clinic room 3"},
            "status": "accepted",
        },
        {"actor": {"reference": "Device/cam"}, "status": "accepted"},
    ]
    booked["participant"] = [
        {**p, "actor": {**p["actor"], "display": "Dr Who"}}
        if p["actor"]["reference"] == "Practitioner/d1"
        else p
        for p in participants
    ]
    await put(http, booked)
    assert (await waiting(http, booked))["with"] == ["Dr Who", "Clinic room 3"]


async def test_the_patients_preferred_language_is_named(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    language = {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}
    english = {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]}
    await put(
        http,
        {
            "resourceType": "Patient",
            "id": "p1",
            "communication": [{"language": english}, {"language": language, "preferred": True}],
        },
    )
    booked = await book(http, app)
    assert (await waiting(http, booked))["language"] == "es"


async def test_else_the_appointments_language(http: httpx.AsyncClient, app: Starlette) -> None:
    booked = await book(http, app)
    await put(http, {**booked, "language": "es-MX"})
    assert (await waiting(http, booked))["language"] == "es-MX"
