"""The telehealth lifecycle enforced on ordinary FHIR writes (issue 6, "Lifecycle"; R4
appointment.html and encounter.html status values): transitions the table does not
allow answer 422 and change nothing; allowed ones record their side effects as jobs in
the same unit of work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from fhirserver.storage.base import Job
from fhirserver.telehealth.rules import DISPOSE, NO_SHOW, PROVISION
from fhirserver.telehealth.virtual_service import (
    VR_CLASS,
    VirtualService,
    channel_type,
    virtual_service,
    with_virtual_service,
)
from tests.backends import Backend
from tests.telehealth import helpers

START = datetime(2026, 12, 1, 10, tzinfo=UTC)
KINDS = [PROVISION, DISPOSE, NO_SHOW]


def appointment(status: str, virtual: bool = True, **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "status": status,
        "start": START.isoformat(),
        "end": (START + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
        ],
        **fields,
    }
    if virtual:
        resource = with_virtual_service(resource, VirtualService(channel_type("jitsi")))
    return resource


async def pending_jobs(backend: Backend) -> list[Job]:
    """Every recorded job, whenever due (claimed far in the future, then released)."""
    jobs = []
    later = datetime(2100, 1, 1, tzinfo=UTC)
    while (
        job := await backend.store.claim_job(KINDS, "test", later, timedelta(days=1))
    ) is not None:
        jobs.append(job)
    return sorted(jobs, key=lambda job: job.kind)


async def test_booking_a_virtual_appointment_records_its_room_and_no_show_check(
    client: httpx.AsyncClient, test_backend: Backend
) -> None:
    created = await client.post("/Appointment", json=appointment("booked"))
    assert created.status_code == 201, created.text
    jobs = await pending_jobs(test_backend)
    assert [(job.kind, job.key) for job in jobs] == [
        (NO_SHOW, created.json()["id"]),
        (PROVISION, created.json()["id"]),
    ]
    assert jobs[0].due == START + timedelta(minutes=15)


async def test_an_illegal_transition_is_422_and_changes_nothing(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Appointment", json=appointment("booked"))).json()
    fulfilled = {**created, "status": "fulfilled"}
    assert (await client.put(f"/Appointment/{created['id']}", json=fulfilled)).status_code == 200
    stored = (await client.get(f"/Appointment/{created['id']}")).json()
    back = await client.put(f"/Appointment/{created['id']}", json={**stored, "status": "booked"})
    assert back.status_code == 422, back.text
    assert back.json()["issue"][0]["expression"] == ["Appointment.status"]
    after = (await client.get(f"/Appointment/{created['id']}")).json()
    assert after["status"] == "fulfilled" and after["meta"] == stored["meta"]


async def test_cancelling_before_the_visit_disposes_the_room(
    client: httpx.AsyncClient, test_backend: Backend
) -> None:
    created = (await client.post("/Appointment", json=appointment("booked"))).json()
    await pending_jobs(test_backend)
    cancelled = await client.put(
        f"/Appointment/{created['id']}", json={**created, "status": "cancelled"}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert [job.kind for job in await pending_jobs(test_backend)] == [DISPOSE]


async def test_an_ordinary_appointment_is_not_managed(
    client: httpx.AsyncClient, test_backend: Backend
) -> None:
    created = (await client.post("/Appointment", json=appointment("fulfilled", False))).json()
    back = await client.put(f"/Appointment/{created['id']}", json={**created, "status": "booked"})
    assert back.status_code == 200, back.text
    assert await pending_jobs(test_backend) == []


async def test_a_finished_virtual_encounter_cannot_restart(client: httpx.AsyncClient) -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": VR_CLASS.to_json(),
        "subject": {"reference": "Patient/p1"},
    }
    created = (await client.post("/Encounter", json=encounter)).json()
    again = await client.put(
        f"/Encounter/{created['id']}", json={**created, "status": "in-progress"}
    )
    assert again.status_code == 422, again.text
    assert again.json()["issue"][0]["expression"] == ["Encounter.status"]


async def test_a_client_cannot_set_or_drop_the_room(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await helpers.book(http, app)
    stripped = {k: v for k, v in booked.items() if k != "extension"}
    updated = await http.put(f"{helpers.FHIR}/Appointment/{booked['id']}", json=stripped)
    assert updated.status_code == 200, updated.text
    assert virtual_service(updated.json()) == virtual_service(booked)


async def test_a_channel_the_server_does_not_serve_is_refused_at_booking(
    http: httpx.AsyncClient,
) -> None:
    resource = with_virtual_service(helpers.appointment(), VirtualService(channel_type("zoom")))
    refused = await http.post(f"{helpers.FHIR}/Appointment", json=resource)
    assert refused.status_code == 422
    assert "livekit" in refused.json()["issue"][0]["diagnostics"]
