"""The telehealth topics on the real lifecycle (README "Telehealth" / "Lifecycle";
Subscriptions R5 Backport IG 1.1.0 "Topics"; R5 subscriptiontopic.html
"resourceTrigger.queryCriteria"): a virtual visit is driven through the app in-process
(book, the patient waits, start, end; and a no-show), every resulting version pair is
read back from the store's history, and each topic fires on exactly the transition it
names, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette

from fhirserver.subscriptions.topics import server_topics
from tests.clock import MovableClock
from tests.telehealth import conftest as telehealth
from tests.telehealth.helpers import FHIR, book, meeting_code, outputs, start

# The telehealth suites' app fixtures (tests/telehealth/conftest.py), reused here.
backend, fake_livekit, livekit, provider = (
    telehealth.backend,
    telehealth.fake_livekit,
    telehealth.livekit,
    telehealth.provider,
)
telehealth_settings, app_clock, app, http = (
    telehealth.telehealth_settings,
    telehealth.app_clock,
    telehealth.app,
    telehealth.http,
)

BASE = "http://fhirserver.dev/fhir/SubscriptionTopic/"
# (type, status before or None on create, status after) of one event.
Event = tuple[str, str | None, str | None]


async def versions(http: httpx.AsyncClient, kind: str, resource_id: str) -> list[dict[str, Any]]:
    """Every version of a resource, oldest first (None for a deletion)."""
    bundle = (await http.get(f"{FHIR}/{kind}/{resource_id}/_history?_count=100")).json()
    return [entry.get("resource") for entry in reversed(bundle["entry"])]


async def events(http: httpx.AsyncClient, *focuses: tuple[str, str]) -> dict[str, list[Event]]:
    """Per topic (by its last path segment), the events among the focuses' version pairs."""
    fired: dict[str, list[Event]] = {url.removeprefix(BASE): [] for url in server_topics()}
    for kind, resource_id in focuses:
        history = await versions(http, kind, resource_id)
        for before, after in zip([None, *history], history, strict=False):
            interaction = "create" if before is None else "delete" if after is None else "update"
            for url, topic in server_topics().items():
                if topic.triggered(kind, interaction, before, after):
                    fired[url.removeprefix(BASE)].append(
                        (kind, before and before["status"], after and after["status"])
                    )
    return fired


async def test_an_attended_visit_fires_booked_waiting_started_ended(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)  # created booked, then the room provisioned (an update)
    waiting = await http.post(f"/join/{meeting_code(booked)}", json={"name": "Pat Doe"})
    assert waiting.json()["status"] == "waiting"
    started = await start(http, booked["id"], display="Dr One")
    assert started.status_code == 200, started.text
    encounter = outputs(started.json())["encounter"]
    ended = await http.post(f"{FHIR}/Encounter/{encounter['id']}/$end-virtual-visit")
    assert ended.status_code == 200, ended.text
    await app.state.jobs.run_due()

    appointment_versions = await versions(http, "Appointment", booked["id"])
    assert len(appointment_versions) >= 4  # booked, provisioned, arrived, fulfilled
    fired = await events(http, ("Appointment", booked["id"]), ("Encounter", encounter["id"]))
    assert fired == {
        "appointment-booked": [("Appointment", None, "booked")],
        "patient-waiting": [("Appointment", "booked", "arrived")],
        "visit-started": [("Encounter", None, "in-progress")],
        "visit-ended": [("Encounter", "in-progress", "finished")],
        "no-show": [],
    }


async def test_a_missed_visit_fires_booked_then_no_show(
    http: httpx.AsyncClient, app: Starlette, app_clock: MovableClock
) -> None:
    booked = await book(http, app, start=datetime.now(UTC) - timedelta(minutes=1))
    app_clock.move_to(datetime.now(UTC) + timedelta(minutes=15))
    await app.state.jobs.run_due()

    fired = await events(http, ("Appointment", booked["id"]))
    assert fired == {
        "appointment-booked": [("Appointment", None, "booked")],
        "patient-waiting": [],
        "visit-started": [],
        "visit-ended": [],
        "no-show": [("Appointment", "booked", "noshow")],
    }


async def test_a_proposal_booked_later_fires_on_the_booking_and_a_cancel_fires_nothing(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    proposed = {
        "resourceType": "Appointment",
        "status": "proposed",
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "needs-action"}],
    }
    created = (await http.post(f"{FHIR}/Appointment", json=proposed)).json()
    for status in ("booked", "cancelled"):
        changed = {**created, "status": status}
        if status == "booked":
            changed["participant"] = [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]
            # app-3 (R4): only a proposed, cancelled or waitlisted one may lack its times.
            changed["start"], changed["end"] = "2030-01-01T10:00:00Z", "2030-01-01T10:30:00Z"
        updated = await http.put(f"{FHIR}/Appointment/{created['id']}", json=changed)
        assert updated.status_code == 200, updated.text
        created = updated.json()

    fired = await events(http, ("Appointment", created["id"]))
    assert fired["appointment-booked"] == [("Appointment", "proposed", "booked")]
    assert all(not found for name, found in fired.items() if name != "appointment-booked")
