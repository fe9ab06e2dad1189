"""`$start-virtual-visit` and `$end-virtual-visit` in-process (README "Lifecycle"; R4
operations.html#executing): the visit started and ended, what the table refuses, the
inputs checked against the OperationDefinitions, concurrent starts, a provider outage,
consent, and a start that loses a race. The provider is LiveKit on a fake RoomService."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.telehealth.helpers import (
    FHIR,
    appointment,
    book,
    consent,
    events,
    http_client,
    meeting_code,
    outputs,
    read,
    search,
    start,
)
from tests.telehealth.providers.test_livekit import FakeLiveKit, twirp


async def test_ending_the_visit_closes_the_room_and_the_code(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit
) -> None:
    booked = await book(http, app)
    code = meeting_code(booked)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]
    await http.post(f"/join/{code}", json={"name": "Pat Doe"})
    ended = await http.post(f"{FHIR}/Encounter/{encounter['id']}/$end-virtual-visit")
    assert ended.status_code == 200, ended.text
    finished = ended.json()
    assert finished["status"] == "finished" and "end" in finished["period"]
    assert all("end" in p["period"] for p in finished["participant"] if "period" in p)
    assert finished["statusHistory"][-1]["status"] == "in-progress"
    await app.state.jobs.run_due()
    assert fake_livekit.rooms == {}
    closed = await http.post(f"/join/{code}", json={"name": "Pat Doe"})
    unknown = await http.post("/join/ABCDEFGHJK", json={"name": "Pat Doe"})
    assert closed.status_code == unknown.status_code == 404
    assert closed.json() == unknown.json()
    # Ending twice is harmless, also through the Appointment.
    again = await http.post(f"{FHIR}/Appointment/{booked['id']}/$end-virtual-visit")
    assert again.status_code == 200 and again.json()["meta"] == finished["meta"]
    assert (await events(http, f"Encounter/{encounter['id']}"))[-2:] == [
        "visit-ended",
        "room-closed",
    ]


@pytest.mark.parametrize(
    ("status", "virtual"), [("cancelled", True), ("proposed", True), ("booked", False)]
)
async def test_start_refused_for_what_the_table_does_not_allow(
    http: httpx.AsyncClient, status: str, virtual: bool
) -> None:
    resource = appointment(status)
    if not virtual:
        resource.pop("extension")
    created = (await http.post(f"{FHIR}/Appointment", json=resource)).json()
    refused = await start(http, created["id"])
    assert refused.status_code == 422, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    assert await search(http, "Encounter") == []
    assert (await read(http, "Appointment", created["id"]))["meta"] == created["meta"]


async def test_operation_inputs_are_checked_against_the_definition(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    path = f"{FHIR}/Appointment/{booked['id']}/$start-virtual-visit"
    unknown = {"resourceType": "Parameters", "parameter": [{"name": "room", "valueString": "x"}]}
    assert (await http.post(path, json=unknown)).status_code == 400
    twice = {
        "resourceType": "Parameters",
        "parameter": [{"name": "display", "valueString": "a"}] * 2,
    }
    assert (await http.post(path, json=twice)).status_code == 400
    wrong = {"resourceType": "Parameters", "parameter": [{"name": "display", "valueInteger": 1}]}
    assert (await http.post(path, json=wrong)).status_code == 400
    patient = {
        "resourceType": "Parameters",
        "parameter": [{"name": "practitioner", "valueReference": {"reference": "Patient/p1"}}],
    }
    assert (await http.post(path, json=patient)).status_code == 400
    assert (await http.get(path)).status_code == 405
    assert (await http.post(f"{FHIR}/Appointment/{booked['id']}/$nope")).status_code == 404
    assert await search(http, "Encounter") == []


async def test_concurrent_starts_make_one_room_and_one_encounter(
    http: httpx.AsyncClient, fake_livekit: FakeLiveKit
) -> None:
    # Not provisioned yet: every caller races to create the room too.
    created = (await http.post(f"{FHIR}/Appointment", json=appointment())).json()
    answers = await asyncio.gather(*(start(http, created["id"]) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    encounters = {outputs(a.json())["encounter"]["id"] for a in answers}
    codes = {outputs(a.json())["meetingCode"] for a in answers}
    assert len(encounters) == 1 and len(codes) == 1
    assert len(await search(http, "Encounter")) == 1
    assert len(fake_livekit.rooms) == 1
    assert (await events(http, f"Appointment/{created['id']}")).count("visit-started") == 1


async def test_a_provider_outage_leaves_no_half_state_and_a_retry_succeeds(
    http: httpx.AsyncClient, fake_livekit: FakeLiveKit
) -> None:
    created = (await http.post(f"{FHIR}/Appointment", json=appointment())).json()
    fake_livekit.fail = [twirp(503, "unavailable", "overloaded", **{"Retry-After": "7"})]
    failed = await start(http, created["id"])
    assert failed.status_code == 503, failed.text
    assert failed.headers["Retry-After"] == "7"
    assert failed.json()["resourceType"] == "OperationOutcome"
    assert await search(http, "Encounter") == []
    assert (await read(http, "Appointment", created["id"]))["meta"] == created["meta"]
    fake_livekit.fail = [httpx.ConnectError("refused")]
    assert (await start(http, created["id"])).status_code == 503
    retried = await start(http, created["id"])
    assert retried.status_code == 200, retried.text
    assert len(fake_livekit.rooms) == 1


async def test_the_capability_statement_lists_the_operations(http: httpx.AsyncClient) -> None:
    statement = (await http.get(f"{FHIR}/metadata")).json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}

    def operations(resource_type: str) -> list[str]:
        # $validate is on every type (R4 resource-operation-validate.html).
        listed = by_type[resource_type].get("operation", [])
        return [o["name"] for o in listed if o["name"] != "validate"]

    assert sorted(operations("Appointment")) == ["end-virtual-visit", "start-virtual-visit"]
    assert operations("Encounter") == ["end-virtual-visit"]
    # No telehealth operation on Patient (bulk export's `export` is there).
    assert not {o["name"] for o in by_type["Patient"].get("operation", [])} & {
        "start-virtual-visit",
        "end-virtual-visit",
    }


async def test_with_require_consent_a_visit_needs_the_patients_telehealth_consent(
    settings: Settings, test_backend: Backend, provider: Any
) -> None:
    app = create_app(
        settings.with_overrides(video_provider="livekit", require_consent=True),
        test_backend.store,
        provider,
    )
    async with app.router.lifespan_context(app), http_client(app) as http:
        booked = await book(http, app)
        for wrong in (consent("Patient/other"), consent(status="inactive")):
            assert (await http.post(f"{FHIR}/Consent", json=wrong)).status_code == 201
        refused = await start(http, booked["id"])
        assert refused.status_code == 422, refused.text
        assert "Consent" in refused.json()["issue"][0]["diagnostics"]
        assert await search(http, "Encounter") == []
        assert (await http.post(f"{FHIR}/Consent", json=consent())).status_code == 201
        assert (await start(http, booked["id"])).status_code == 200


async def test_end_records_the_reason_given(http: httpx.AsyncClient, app: Starlette) -> None:
    booked = await book(http, app)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]
    reason = {"name": "reason", "valueCodeableConcept": {"text": "connection lost"}}
    ended = await http.post(
        f"{FHIR}/Encounter/{encounter['id']}/$end-virtual-visit",
        json={"resourceType": "Parameters", "parameter": [reason]},
    )
    assert ended.status_code == 200, ended.text
    found = await search(http, f"AuditEvent?subtype=visit-ended&entity=Encounter/{encounter['id']}")
    assert [event.get("outcomeDesc") for event in found] == ["connection lost"]


@pytest.mark.parametrize("meanwhile", ["delete", "cancel"])
async def test_a_start_that_loses_a_race_leaves_no_room_behind(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit, meanwhile: str
) -> None:
    created = (await http.post(f"{FHIR}/Appointment", json=appointment())).json()
    provider = app.state.visit_context.provider
    create_room, release = provider.create_room, asyncio.Event()

    async def slow_create(key: str, max_participants: int | None = None) -> Any:
        room = await create_room(key, max_participants)
        await release.wait()
        return room

    provider.create_room = slow_create
    starting = asyncio.create_task(start(http, created["id"]))
    await asyncio.sleep(0.05)
    path = f"{FHIR}/Appointment/{created['id']}"
    if meanwhile == "delete":
        assert (await http.delete(path)).status_code == 204
    else:
        cancelled = {**created, "status": "cancelled"}
        assert (await http.put(path, json=cancelled)).status_code == 200
    release.set()
    answer = await starting
    assert answer.status_code == (410 if meanwhile == "delete" else 422), answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert fake_livekit.rooms == {}
    assert await search(http, "Encounter") == []
