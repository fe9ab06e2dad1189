"""Join by code, the public endpoint outside the FHIR base (issue 6 "Join by code"):
the waiting room, then the call once the visit starts, the visit window, the page, the
one answer for every code that does not admit, and the rate limit on wrong guesses per
client that makes guessing a 48-bit code hopeless without letting anyone lock a code out
(issue 20 point 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.config import Settings
from fhirserver.rest.ratelimit import RateLimit
from fhirserver.telehealth.providers import ProviderUnavailable
from fhirserver.telehealth.virtual_service import virtual_service
from tests.telehealth.helpers import book, events, meeting_code, outputs, read, start


@pytest.fixture
def telehealth_settings(settings: Settings) -> Settings:
    return settings.with_overrides(video_provider="livekit", join_rate_per_minute=5)


async def test_the_page_is_html_with_the_form(http: httpx.AsyncClient) -> None:
    for path in ("/join", "/join/K7PX3MWQ9C"):
        page = await http.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<form" in page.text and 'name="name"' in page.text


GUESSES = ("ABCDEFGHJK", "BCDEFGHJKM", "CDEFGHJKMN", "DEFGHJKMNP", "EFGHJKMNPQ", "FGHJKMNPQR")


async def test_guessing_codes_from_one_client_is_throttled(http: httpx.AsyncClient) -> None:
    answers = [await http.post(f"/join/{guess}", json={"name": "Mallory"}) for guess in GUESSES]
    assert [a.status_code for a in answers] == [404] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert answers[-1].json()["issue"][0]["code"] == "throttled"


@asynccontextmanager
async def _from(app: Starlette, address: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        yield other


async def _joins(http: httpx.AsyncClient, *codes: str) -> list[int]:
    return [(await http.post(f"/join/{c}", json={"name": "Pat"})).status_code for c in codes]


async def test_nobody_can_lock_a_code_out(http: httpx.AsyncClient, app: Starlette) -> None:
    """Issue 20 point 3: only wrong guesses count, against the client that made them."""
    booked = await book(http, app)
    code = meeting_code(booked)
    async with _from(app, "10.0.0.66") as mallory:
        # Mallory knows the code and uses it over and over.
        spent = await _joins(mallory, *[code] * 6)
        # The patient, from another address, is admitted all the same.
        for address in ("10.0.0.1", "10.0.0.2"):
            async with _from(app, address) as patient:
                assert await _joins(patient, code) == [200]
        assert spent == [200] * 6
        # Guessing is still slow, and locked against Mallory, who guessed wrong: even
        # the right code.
        assert await _joins(mallory, *GUESSES, code) == [404] * 5 + [429, 429]


async def test_the_waiting_room_polling_is_never_refused(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    assert await _joins(http, *[meeting_code(booked)] * 12) == [200] * 12


async def test_a_form_post_works_and_a_missing_name_is_400(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    app.state.join_limit = RateLimit(60, 60)
    booked = await book(http, app)
    code = meeting_code(booked)
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    form = await http.post(f"/join/{code}", content=b"name=+Pat+++Doe+", headers=form_type)
    assert form.status_code == 200 and form.json()["status"] == "waiting"
    for body in ({}, {"name": ""}, {"name": "x" * 81}, {"name": 3}):
        assert (await http.post(f"/join/{code}", json=body)).status_code == 400
    assert (await http.post(f"/join/{code}", content=b"{not json")).status_code == 400
    waiting = [
        e for e in (await http.get("/fhir/AuditEvent?subtype=patient-waiting")).json()["entry"]
    ]
    assert waiting[0]["resource"]["agent"][0]["who"]["display"] == "Pat Doe"
    assert (await read(http, "Appointment", booked["id"]))["status"] == "arrived"


async def test_a_name_that_is_not_text_is_400_not_500(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    code = meeting_code(booked)
    for raw in (b'{"name":"\\ud800"}', b'{"name":"Pat\\u0000"}'):
        answer = await http.post(f"/join/{code}", content=raw)
        assert answer.status_code == 400, answer.text
    assert (await read(http, "Appointment", booked["id"]))["status"] == "booked"


async def test_addresses_of_one_ipv6_64_share_one_limit(app: Starlette) -> None:
    statuses = []
    for host in range(6):
        transport = httpx.ASGITransport(app=app, client=(f"2001:db8::{host:x}", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            answer = await other.post("/join/ABCDEFGHJK", json={"name": "Mallory"})
            statuses.append(answer.status_code)
    assert statuses == [404] * 5 + [429]


async def test_a_provider_outage_at_join_records_no_join(
    http: httpx.AsyncClient, app: Starlette, fake_livekit: Any
) -> None:
    booked = await book(http, app)
    encounter = outputs((await start(http, booked["id"])).json())["encounter"]

    async def down(room_id: str) -> Any:
        raise ProviderUnavailable("LiveKit is down")

    app.state.visit_context.provider.room = down
    answer = await http.post(f"/join/{meeting_code(booked)}", json={"name": "Pat"})
    assert answer.status_code == 503
    stored = await read(http, "Encounter", encounter["id"])
    assert not [p for p in stored.get("participant", []) if "period" in p]


async def test_the_patient_waits_then_joins_once_the_visit_starts(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    code = meeting_code(booked)
    waiting = await http.post(f"/join/{code}", json={"name": "Pat Doe"})
    assert waiting.status_code == 200, waiting.text
    assert waiting.json() == {"status": "waiting", "start": booked["start"], "with": []}
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


async def test_the_code_opens_only_inside_the_visit_window(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app, start=datetime.now(UTC) + timedelta(hours=2))
    code = meeting_code(booked)
    early = await http.post(f"/join/{code}", json={"name": "Pat"})
    unknown = await http.post("/join/ABCDEFGHJK", json={"name": "Pat"})
    assert early.status_code == 404 and early.json() == unknown.json()
    assert (await read(http, "Appointment", booked["id"]))["status"] == "booked"
