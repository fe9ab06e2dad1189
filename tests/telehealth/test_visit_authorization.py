"""Who may start and end a virtual visit with authorization on (issue 16 point 5;
SMART App Launch 2.2 scopes-and-launch-context.html): a practitioner who takes part in
the Appointment, or a system client, each allowed to update it. Patients join by
meeting code, which stays public.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.auth.access import Access
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.scopes import parse_scopes
from fhirserver.config import Settings
from fhirserver.telehealth.providers import VideoProvider
from tests.backends import Backend
from tests.clock import MovableClock
from tests.telehealth.helpers import FHIR, book, meeting_code, start


def _access(scopes: str, user: str | None = None, patient: str | None = None) -> Access:
    return Access(client_id="app", scopes=parse_scopes(scopes), user=user, patient=patient)


TOKENS = {
    "admin": Access.everything(),
    "d1": _access("user/*.cruds", user="Practitioner/d1"),
    "d2": _access("user/*.cruds", user="Practitioner/d2"),
    "d1-read-only": _access("user/*.rs", user="Practitioner/d1"),
    "patient": _access("patient/*.cruds", user="Patient/p1", patient="p1"),
    "backend": _access("system/Appointment.rus system/Encounter.crus"),
}


async def _authenticate(token: str) -> Access:
    if token not in TOKENS:
        raise InvalidToken("the token is not known")
    return TOKENS[token]


@pytest.fixture
async def app(
    telehealth_settings: Settings,
    test_backend: Backend,
    provider: VideoProvider,
    app_clock: MovableClock,
) -> AsyncIterator[Starlette]:
    app = create_app(
        telehealth_settings,
        store=test_backend.store,
        provider=provider,
        clock=app_clock,
        authenticator=_authenticate,
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    headers: dict[str, Any] = {
        "Content-Type": "application/fhir+json",
        "Authorization": "Bearer admin",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as client:
        yield client


def _as(http: httpx.AsyncClient, token: str) -> None:
    http.headers["Authorization"] = f"Bearer {token}"


@pytest.mark.parametrize("token", ["d2", "d1-read-only", "patient"])
async def test_who_is_not_a_participating_practitioner_may_not_start_it(
    http: httpx.AsyncClient, app: Starlette, token: str
) -> None:
    booked = await book(http, app)
    _as(http, token)
    answer = await start(http, booked["id"])
    assert answer.status_code == 403, answer.text
    _as(http, "admin")
    stored = (await http.get(f"{FHIR}/Appointment/{booked['id']}")).json()
    assert stored["status"] == "booked"


@pytest.mark.parametrize("token", ["d1", "backend"])
async def test_a_participating_practitioner_or_a_system_client_starts_and_ends_it(
    http: httpx.AsyncClient, app: Starlette, token: str
) -> None:
    booked = await book(http, app)
    _as(http, token)
    started = await start(http, booked["id"])
    assert started.status_code == 200, started.text
    _as(http, "d2")
    refused = await http.post(f"{FHIR}/Appointment/{booked['id']}/$end-virtual-visit")
    assert refused.status_code == 403
    _as(http, token)
    ended = await http.post(f"{FHIR}/Appointment/{booked['id']}/$end-virtual-visit")
    assert ended.status_code == 200, ended.text
    assert ended.json()["status"] == "finished"


async def test_without_a_token_the_operation_is_401_but_joining_by_code_is_public(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    booked = await book(http, app)
    del http.headers["Authorization"]
    assert (await start(http, booked["id"])).status_code == 401
    page = await http.get(f"/join/{meeting_code(booked)}")
    assert page.status_code == 200
    joined = await http.post(f"/join/{meeting_code(booked)}", json={"name": "Pat"})
    assert joined.status_code == 200, joined.text
