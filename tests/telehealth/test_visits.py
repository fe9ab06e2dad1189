"""A virtual visit driven end to end in-process (issue 6 "Lifecycle", every row; R4
appointment.html, encounter.html, auditevent.html, operations.html#executing): the
room provisioned after booking, the waiting room, `$start-virtual-visit`, the end of
the visit, cancellation, no-show, concurrency, a provider outage, and a restart between
a state change and its side effect. The provider is LiveKit on a fake RoomService."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.telehealth.virtual_service import (
    VirtualService,
    channel_type,
    virtual_service,
    with_virtual_service,
)
from tests.backends import Backend
from tests.clock import MovableClock
from tests.telehealth.providers.test_livekit import FakeLiveKit, twirp

FHIR = "/fhir"


def appointment(status: str = "booked", start: datetime | None = None) -> dict[str, Any]:
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
    return with_virtual_service(resource, VirtualService(channel_type("livekit")))


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


async def test_booking_provisions_a_room_with_a_join_address_and_meeting_code(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit
) -> None:
    booked = await book(http, app)
    service = virtual_service(booked)
    assert service is not None and service.meeting_code is not None
    assert service.address == f"http://127.0.0.1:8080/join/{service.meeting_code}"
    assert service.session_key in fake_livekit.rooms
    assert len(fake_livekit.rooms) == 1
    assert await events(http, f"Appointment/{booked['id']}") == ["room-provisioned"]
    # The code finds the Appointment (our SearchParameter) and nothing else does.
    found = await search(http, f"Appointment?meeting-code={service.meeting_code}")
    assert [a["id"] for a in found] == [booked["id"]]
    # A repeated provisioning job changes nothing: one room, one version.
    await app.state.visits.provision(_job("telehealth.provision-room", booked["id"]))
    again = await read(http, "Appointment", booked["id"])
    assert again["meta"]["versionId"] == booked["meta"]["versionId"]
    assert len(fake_livekit.calls) == 1


async def test_a_client_cannot_set_or_drop_the_room(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    stripped = {k: v for k, v in booked.items() if k != "extension"}
    updated = await http.put(f"{FHIR}/Appointment/{booked['id']}", json=stripped)
    assert updated.status_code == 200, updated.text
    assert virtual_service(updated.json()) == virtual_service(booked)


async def test_the_patient_waits_then_joins_once_the_visit_starts(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    code = meeting_code(booked)
    waiting = await http.post(f"/join/{code}", json={"name": "Pat Doe"})
    assert waiting.status_code == 200, waiting.text
    assert waiting.json() == {"status": "waiting", "start": booked["start"]}
    assert (await read(http, "Appointment", booked["id"]))["status"] == "arrived"

    started = await start(http, booked["id"], display="Dr One")
    assert started.status_code == 200, started.text
    out = outputs(started.json())
    encounter = out["encounter"]
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "VR"
    assert encounter["appointment"] == [{"reference": f"Appointment/{booked['id']}"}]
    assert encounter["subject"] == {"reference": "Patient/p1"}
    assert out["meetingCode"] == code
    assert out["patientUrl"] == virtual_service(booked).address  # type: ignore[union-attr]
    assert out["hostToken"] and out["hostToken"] in out["hostUrl"]
    assert (await read(http, "Appointment", booked["id"]))["status"] == "fulfilled"

    # Typed the way people type it: lower case, with the display dashes.
    typed = f"{code[:4]}-{code[4:8]}-{code[8:]}".lower()  # type: ignore[index]
    ready = await http.post(f"/join/{typed}", json={"name": "Pat Doe"})
    assert ready.status_code == 200, ready.text
    answer = ready.json()
    assert answer["status"] == "ready" and answer["token"] in answer["url"]
    stored = await read(http, "Encounter", encounter["id"])
    joined = [p for p in stored["participant"] if "period" in p]
    assert len(joined) == 1 and "end" not in joined[0]["period"]
    assert await events(http, f"Appointment/{booked['id']}") == [
        "room-provisioned",
        "patient-waiting",
        "visit-started",
        "participant-joined",
    ]


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


async def test_a_put_to_finished_closes_the_room_as_the_operation_does(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit
) -> None:
    booked = await book(http, app)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]
    put = await http.put(
        f"{FHIR}/Encounter/{encounter['id']}", json={**encounter, "status": "finished"}
    )
    assert put.status_code == 200, put.text
    await app.state.jobs.run_due()
    assert fake_livekit.rooms == {}


@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
async def test_a_visit_called_off_disposes_the_room(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit, status: str
) -> None:
    booked = await book(http, app)
    code = meeting_code(booked)
    called_off = {**booked, "status": status}
    assert (
        await http.put(f"{FHIR}/Appointment/{booked['id']}", json=called_off)
    ).status_code == 200
    await app.state.jobs.run_due()
    assert fake_livekit.rooms == {}
    assert (await http.post(f"/join/{code}", json={"name": "Pat"})).status_code == 404
    assert (await start(http, booked["id"])).status_code == 422


async def test_nobody_joins_within_the_grace_period_makes_a_no_show(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit, app_clock: MovableClock
) -> None:
    booked = await book(http, app, start=datetime.now(UTC) - timedelta(minutes=1))
    later = datetime.now(UTC) + timedelta(minutes=15)
    app_clock.move_to(later)
    await app.state.jobs.run_due()
    assert (await read(http, "Appointment", booked["id"]))["status"] == "noshow"
    assert fake_livekit.rooms == {}
    assert "no-show" in await events(http, f"Appointment/{booked['id']}")


async def test_a_patient_who_joined_is_no_no_show(
    http: httpx.AsyncClient, app: Starlette, app_clock: MovableClock
) -> None:
    booked = await book(http, app, start=datetime.now(UTC) - timedelta(minutes=1))
    code = meeting_code(booked)
    assert (await http.post(f"/join/{code}", json={"name": "Pat"})).status_code == 200
    later = datetime.now(UTC) + timedelta(minutes=15)
    app_clock.move_to(later)
    await app.state.jobs.run_due()
    assert (await read(http, "Appointment", booked["id"]))["status"] == "arrived"


async def test_the_code_opens_only_inside_the_visit_window(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app, start=datetime.now(UTC) + timedelta(hours=2))
    code = meeting_code(booked)
    early = await http.post(f"/join/{code}", json={"name": "Pat"})
    unknown = await http.post("/join/ABCDEFGHJK", json={"name": "Pat"})
    assert early.status_code == 404 and early.json() == unknown.json()
    assert (await read(http, "Appointment", booked["id"]))["status"] == "booked"


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


async def test_a_provisioning_outage_is_retried_with_backoff(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit, app_clock: MovableClock
) -> None:
    created = (await http.post(f"{FHIR}/Appointment", json=appointment())).json()
    fake_livekit.fail = [httpx.ConnectError("refused")]
    await app.state.jobs.run_due()
    assert virtual_service(await read(http, "Appointment", created["id"])).session_key is None  # type: ignore[union-attr]
    soon = datetime.now(UTC) + timedelta(seconds=5)
    app_clock.move_to(soon)
    await app.state.jobs.run_due()
    provisioned = await read(http, "Appointment", created["id"])
    assert virtual_service(provisioned).meeting_code is not None  # type: ignore[union-attr]
    assert len(fake_livekit.rooms) == 1


async def test_a_restart_between_booking_and_provisioning_provisions_once(
    settings: Settings, test_backend: Backend, provider: Any, fake_livekit: FakeLiveKit
) -> None:
    first = create_app(
        settings.with_overrides(video_provider="livekit"), test_backend.store, provider
    )
    async with first.router.lifespan_context(first), _client(first) as http:
        created = (await http.post(f"{FHIR}/Appointment", json=appointment())).json()
        # The process dies after the commit, before any job ran.
    second_clock = MovableClock()
    second = create_app(
        settings.with_overrides(video_provider="livekit"),
        test_backend.store,
        provider,
        clock=second_clock,
    )
    async with second.router.lifespan_context(second):
        # The job was claimed by a process that died mid-run: its lease runs out.
        claimed = await test_backend.store.claim_job(
            ["telehealth.provision-room"], "dead", datetime.now(UTC), timedelta(seconds=1)
        )
        assert claimed is not None
        await provider.create_room(created["id"])  # it had reached the provider
        later = datetime.now(UTC) + timedelta(minutes=2)
        second_clock.move_to(later)
        await second.state.jobs.run_due()
        await second.state.jobs.run_due()
        async with _client(second) as http:
            provisioned = await read(http, "Appointment", created["id"])
            history = (await http.get(f"{FHIR}/Appointment/{created['id']}/_history")).json()
    assert virtual_service(provisioned).meeting_code is not None  # type: ignore[union-attr]
    assert history["total"] == 2  # booked, then provisioned: once
    assert len(fake_livekit.rooms) == 1


async def test_a_channel_the_server_does_not_serve_is_refused_at_booking(
    http: httpx.AsyncClient,
) -> None:
    resource = with_virtual_service(appointment(), VirtualService(channel_type("zoom")))
    refused = await http.post(f"{FHIR}/Appointment", json=resource)
    assert refused.status_code == 422
    assert "livekit" in refused.json()["issue"][0]["diagnostics"]


async def test_the_capability_statement_lists_the_operations(http: httpx.AsyncClient) -> None:
    statement = (await http.get(f"{FHIR}/metadata")).json()
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert [o["name"] for o in by_type["Appointment"]["operation"]] == [
        "start-virtual-visit",
        "end-virtual-visit",
    ] or sorted(o["name"] for o in by_type["Appointment"]["operation"]) == [
        "end-virtual-visit",
        "start-virtual-visit",
    ]
    assert [o["name"] for o in by_type["Encounter"]["operation"]] == ["end-virtual-visit"]
    assert "operation" not in by_type["Patient"]


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Content-Type": "application/fhir+json"},
    )


def _job(kind: str, key: str) -> Any:
    from fhirserver.storage.base import Job

    return Job(kind, key, datetime.now(UTC))


def consent(patient: str = "Patient/p1", **changes: Any) -> dict[str, Any]:
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
                        "code": "telehealth",
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
    return {**resource, **changes}


async def test_with_require_consent_a_visit_needs_the_patients_telehealth_consent(
    settings: Settings, test_backend: Backend, provider: Any
) -> None:
    app = create_app(
        settings.with_overrides(video_provider="livekit", require_consent=True),
        test_backend.store,
        provider,
    )
    async with app.router.lifespan_context(app), _client(app) as http:
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
    provider = app.state.visits.provider
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
