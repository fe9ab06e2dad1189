"""The jobs a virtual visit's lifecycle records, run after commit (README "Lifecycle";
DESIGN.md "Side effects and external calls"): the room provisioned after booking, closed
when the visit ends or is called off, the no-show check, a provider outage retried with
backoff, and a restart between a state change and its side effect. The provider is
LiveKit on a fake RoomService."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.storage.base import Job
from fhirserver.telehealth.virtual_service import virtual_service
from fhirserver.telehealth.visit_jobs import close_visit, provision_room
from tests.backends import Backend
from tests.clock import MovableClock
from tests.telehealth.helpers import (
    FHIR,
    appointment,
    book,
    events,
    http_client,
    meeting_code,
    outputs,
    read,
    search,
    start,
)
from tests.telehealth.providers.test_livekit import FakeLiveKit


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
    await provision_room(app.state.visit_context, _job("telehealth.provision-room", booked["id"]))
    again = await read(http, "Appointment", booked["id"])
    assert again["meta"]["versionId"] == booked["meta"]["versionId"]
    assert len(fake_livekit.calls) == 1


async def finished_by_put(http: httpx.AsyncClient, app: Starlette) -> httpx.Response:
    """A visit started, then its Encounter finished by a client's PUT and the jobs run."""
    booked = await book(http, app)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]
    put = await http.put(
        f"{FHIR}/Encounter/{encounter['id']}", json={**encounter, "status": "finished"}
    )
    assert put.status_code == 200, put.text
    await app.state.jobs.run_due()
    return put


async def test_a_put_to_finished_closes_the_room_as_the_operation_does(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: FakeLiveKit
) -> None:
    await finished_by_put(http, app)
    assert fake_livekit.rooms == {}


async def test_a_put_to_finished_records_the_end_as_the_operation_does(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    # README "Lifecycle": Encounter becomes finished (PUT, $end-virtual-visit, or the
    # provider reports the room ended) -> AuditEvents visit-ended, room-closed.
    put = await finished_by_put(http, app)
    encounter = put.json()  # finished, with the period.end the write set
    assert (await events(http, f"Encounter/{encounter['id']}"))[-2:] == [
        "visit-ended",
        "room-closed",
    ]
    # The job again (a lease ran out mid-run): the end is recorded once, when it was.
    await close_visit(app.state.visit_context, _job("telehealth.close-visit", encounter["id"]))
    ended = await search(http, f"AuditEvent?subtype=visit-ended&entity=Encounter/{encounter['id']}")
    assert [event["recorded"] for event in ended] == [encounter["period"]["end"]]
    # ... and the room's closing is recorded once too.
    closed = await search(
        http, f"AuditEvent?subtype=room-closed&entity=Encounter/{encounter['id']}"
    )
    assert len(closed) == 1


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
    async with first.router.lifespan_context(first), http_client(first) as http:
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
        async with http_client(second) as http:
            provisioned = await read(http, "Appointment", created["id"])
            history = (await http.get(f"{FHIR}/Appointment/{created['id']}/_history")).json()
    assert virtual_service(provisioned).meeting_code is not None  # type: ignore[union-attr]
    assert history["total"] == 2  # booked, then provisioned: once
    assert len(fake_livekit.rooms) == 1


def _job(kind: str, key: str) -> Any:
    return Job(kind, key, datetime.now(UTC))
