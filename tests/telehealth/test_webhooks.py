"""Provider webhooks to participant periods and AuditEvents (issue 6 "Tracking"; R4
encounter.html Encounter.participant.period, auditevent.html): a verified event is
recorded once, a forged or altered one is rejected with 401 and records nothing. LiveKit
signs its deliveries (a JWT carrying the body's sha256)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from starlette.applications import Starlette

from fhirserver.telehealth.virtual_service import virtual_service
from tests.telehealth.helpers import book, events, outputs, read, start
from tests.telehealth.providers.test_livekit import signed

HOOK = "/telehealth/webhooks/livekit"


def event(kind: str, room: str, event_id: str, identity: str = "Practitioner/d1") -> bytes:
    data: dict[str, Any] = {
        "event": kind,
        "id": event_id,
        "room": {"name": room},
        # The server's time (its clock is real time here); the provider's checks run at NOW.
        "createdAt": str(int(time.time())),
    }
    if kind != "room_finished":
        data["participant"] = {"identity": identity, "name": "Dr One", "sid": "PA_1"}
    return json.dumps(data).encode()


async def visit(http: httpx.AsyncClient, app: Starlette) -> tuple[str, dict[str, Any]]:
    booked = await book(http, app)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]
    room = virtual_service(booked).session_key  # type: ignore[union-attr]
    assert room is not None
    return room, encounter


async def deliver(http: httpx.AsyncClient, body: bytes, **headers: str) -> httpx.Response:
    return await http.post(HOOK, content=body, headers=headers or signed(body))


async def test_join_and_leave_become_a_participant_period_and_audit_events(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    joined = await deliver(http, event("participant_joined", room, "EV_1"))
    assert joined.status_code == 200 and joined.json() == {"recorded": 1}
    left = await deliver(http, event("participant_left", room, "EV_2"))
    assert left.json() == {"recorded": 1}
    stored = await read(http, "Encounter", encounter["id"])
    periods = [
        p["period"]
        for p in stored["participant"]
        if p.get("individual", {}).get("reference") == "Practitioner/d1"
    ]
    assert periods and periods[0]["start"] <= periods[0]["end"]
    recorded = await events(http, f"Encounter/{encounter['id']}")
    assert recorded[-2:] == ["participant-joined", "participant-left"]


async def test_a_replayed_delivery_is_recorded_once(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    body = event("participant_joined", room, "EV_1")
    assert (await deliver(http, body)).json() == {"recorded": 1}
    assert (await deliver(http, body)).json() == {"recorded": 0}
    recorded = await events(http, f"Encounter/{encounter['id']}")
    assert recorded.count("participant-joined") == 1


async def test_forged_or_altered_deliveries_are_rejected_and_record_nothing(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    body = event("participant_joined", room, "EV_1")
    before = await read(http, "Encounter", encounter["id"])
    audit = await events(http, f"Encounter/{encounter['id']}")
    forged = signed(body, secret="not-the-api-secret-0123456789abcdef")
    altered = signed(event("participant_joined", room, "EV_0"))
    for headers in (forged, altered, {"Content-Type": "application/webhook+json"}):
        answer = await deliver(http, body, **headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["resourceType"] == "OperationOutcome"
    assert (await read(http, "Encounter", encounter["id"]))["meta"] == before["meta"]
    assert await events(http, f"Encounter/{encounter['id']}") == audit


async def test_the_room_ending_at_the_provider_finishes_the_visit(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    assert (await deliver(http, event("room_finished", room, "EV_9"))).json() == {"recorded": 1}
    stored = await read(http, "Encounter", encounter["id"])
    assert stored["status"] == "finished" and "end" in stored["period"]


async def test_events_for_unknown_rooms_or_other_providers_are_dropped(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    _, encounter = await visit(http, app)
    unknown = await deliver(http, event("participant_joined", "visit-unknown", "EV_1"))
    assert unknown.json() == {"recorded": 0}
    other = await http.post("/telehealth/webhooks/100ms", content=b"{}")
    assert other.status_code == 404
    assert "participant-joined" not in await events(http, f"Encounter/{encounter['id']}")


async def test_a_replayed_delivery_without_an_id_records_nothing_new(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    data = json.loads(event("participant_joined", room, "EV_1"))
    del data["id"]
    body = json.dumps(data).encode()
    assert (await deliver(http, body)).json() == {"recorded": 1}
    assert (await deliver(http, body)).json() == {"recorded": 0}
    assert (await events(http, f"Encounter/{encounter['id']}")).count("participant-joined") == 1


async def test_a_room_name_with_search_syntax_matches_no_visit(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    for name in (f"{room},x", f"x,{room}", "[t]", f"{room}|"):
        answer = await deliver(http, event("participant_joined", name, f"EV_{name}"))
        assert answer.json() == {"recorded": 0}, name
    assert "participant-joined" not in await events(http, f"Encounter/{encounter['id']}")


async def test_odd_event_times_and_names_are_refused_or_dropped_never_500(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, _ = await visit(http, app)
    for when in ("²", "9" * 5000, "9999-12-31T23:59:59-14:00"):
        data = json.loads(event("participant_joined", room, f"EV_{when[:3]}"))
        data["createdAt"] = when
        answer = await deliver(http, json.dumps(data).encode())
        assert answer.status_code in (200, 401), answer.text
    odd = json.loads(event("participant_left", room, "EV_odd", identity="guest-1"))
    odd["participant"]["name"] = "\ud800"
    answer = await deliver(http, json.dumps(odd).encode())
    # A lone surrogate is not JSON text (RFC 8259 8.1: UTF-8): refused, or dropped.
    assert answer.status_code in (200, 401)
    assert answer.status_code == 401 or answer.json() == {"recorded": 0}


async def test_a_deeply_nested_verified_body_is_refused_not_500(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    """Issue 20 "Webhooks": parsing is depth- and size-limited (a signed body nested
    200,000 deep gave a RecursionError, a 500; 100,000 fits the body limit)."""
    await visit(http, app)
    deep = b'{"event": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = await deliver(http, deep)
    assert answer.status_code in (400, 401), answer.text
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_event_times_far_from_now_are_refused_and_record_nothing(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    """A time outside a plausible window around now (a year ahead, a year back) is not
    stored as a participant period."""
    room, encounter = await visit(http, app)
    for offset in (365 * 86400, -365 * 86400):
        data = json.loads(event("participant_joined", room, f"EV_far{offset}"))
        data["createdAt"] = str(int(time.time()) + offset)
        answer = await deliver(http, json.dumps(data).encode())
        assert answer.status_code in (400, 401), answer.text
    stored = await read(http, "Encounter", encounter["id"])
    assert all("period" not in p or "start" not in p["period"] for p in stored["participant"])


async def test_a_participant_period_never_ends_before_it_starts(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, encounter = await visit(http, app)
    joined = json.loads(event("participant_joined", room, "EV_j"))
    joined["createdAt"] = str(int(time.time()) + 120)
    assert (await deliver(http, json.dumps(joined).encode())).json() == {"recorded": 1}
    left = json.loads(event("participant_left", room, "EV_l"))
    left["createdAt"] = str(int(time.time()) + 60)  # delivered late, stamped earlier
    assert (await deliver(http, json.dumps(left).encode())).status_code == 200
    stored = await read(http, "Encounter", encounter["id"])
    periods = [
        p["period"]
        for p in stored["participant"]
        if p.get("individual", {}).get("reference") == "Practitioner/d1" and "period" in p
    ]
    assert periods and all(p["start"] <= p.get("end", p["start"]) for p in periods)
