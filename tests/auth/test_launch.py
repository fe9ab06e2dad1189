"""EHR launch (SMART App Launch 2.2 app-launch.html "Launch App: EHR Launch"): the EHR
asks `POST /auth/launch` for a `launch` value with its user's token, opens the app with
it, and the app's authorization request then carries the EHR's patient and encounter
into the grant, with no patient picker."""

from __future__ import annotations

from datetime import timedelta

import httpx
from starlette.applications import Starlette

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import parse_scopes
from fhirserver.auth.server import AuthServer
from fhirserver.auth.tokens import mint_access_token
from tests.auth.browser import (
    Pkce,
    app_clock,
    authorize_params,
    authorize_url,
    backend,
    browser,
    exchange,
    log_in,
    only_form,
    put_resource,
    redirect_query,
    smart_app,
    submit,
)
from tests.clock import MovableClock

__all__ = ["app_clock", "backend", "browser", "smart_app"]

EHR_SCOPE = "launch openid fhirUser patient/*.rs"


async def bearer(app: Starlette, access: Access) -> dict[str, str]:
    """A token of the app's authorization server, as the EHR's user would hold."""
    server: AuthServer = app.state.auth_server
    issued = mint_access_token(access, await server.signing_keys(), server.tokens, server.clock)
    return {"Authorization": f"Bearer {issued.value}"}


def practitioner() -> Access:
    return Access("ehr", parse_scopes("user/*.rs"), subject="dr.who", user="Practitioner/7")


async def launch_for(
    http: httpx.AsyncClient, app: Starlette, body: dict[str, str], access: Access | None = None
) -> httpx.Response:
    headers = await bearer(app, access or practitioner())
    return await http.post("/auth/launch", json=body, headers=headers)


async def test_an_ehr_launch_binds_its_patient_and_encounter_without_a_picker(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    await put_resource(
        smart_app,
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "in-progress",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/carol"},
        },
    )
    made = await launch_for(browser, smart_app, {"patient": "carol", "encounter": "e1"})
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    launch = made.json()["launch"]
    pkce = Pkce()
    params = authorize_params(pkce, EHR_SCOPE, launch=launch)
    approval = await log_in(browser, params, "dr.who")
    assert "Allow access?" in approval.text and "Carol Jones" in approval.text
    form = only_form(approval)
    answer = await submit(browser, form, form.submission(decision="approve"))
    tokens = await exchange(browser, redirect_query(answer)["code"], pkce)
    assert tokens.status_code == 200, tokens.text
    assert (tokens.json()["patient"], tokens.json()["encounter"]) == ("carol", "e1")
    access = await smart_app.state.authenticator(tokens.json()["access_token"])
    assert (access.patient, access.encounter) == ("carol", "e1")


async def test_a_system_client_may_launch_too_as_a_form(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    system = Access("ehr-backend", parse_scopes("system/*.rs"))
    headers = await bearer(smart_app, system)
    made = await browser.post("/auth/launch", data={"patient": "Patient/bob"}, headers=headers)
    assert made.status_code == 200 and made.json()["launch"]


async def test_a_launch_needs_a_valid_token_of_this_server(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eA=="}):
        answer = await browser.post("/auth/launch", json={"patient": "bob"}, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["resourceType"] == "OperationOutcome"


async def test_a_patient_user_may_not_launch(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    patient = Access("app", parse_scopes("patient/*.rs"), subject="alice", user="Patient/alice")
    answer = await launch_for(browser, smart_app, {"patient": "bob"}, patient)
    assert answer.status_code == 403


async def test_a_launch_for_a_patient_or_encounter_not_here_is_refused(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    for body in ({"patient": "nobody"}, {"patient": "bob", "encounter": "nothing"}, {}):
        answer = await launch_for(browser, smart_app, body)
        assert answer.status_code == 400


async def test_an_unknown_or_expired_launch_is_refused(
    browser: httpx.AsyncClient, smart_app: Starlette, app_clock: MovableClock
) -> None:
    unknown = authorize_params(Pkce(), EHR_SCOPE, launch="made-up")
    answer = await browser.get(authorize_url(unknown))
    assert redirect_query(answer)["error"] == "invalid_request"
    now = smart_app.state.writes.clock()
    app_clock.move_to(now)
    launch = (await launch_for(browser, smart_app, {"patient": "bob"})).json()["launch"]
    app_clock.move_to(now + timedelta(minutes=5, seconds=1))
    expired = authorize_params(Pkce(), EHR_SCOPE, launch=launch)
    answer = await browser.get(authorize_url(expired))
    query = redirect_query(answer)
    assert query["error"] == "invalid_request" and query["state"] == expired["state"]


async def test_the_launch_scope_and_value_go_together(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    launch = (await launch_for(browser, smart_app, {"patient": "bob"})).json()["launch"]
    without_scope = authorize_params(Pkce(), "patient/*.rs", launch=launch)
    without_value = authorize_params(Pkce(), EHR_SCOPE)
    for params in (without_scope, without_value):
        answer = await browser.get(authorize_url(params))
        assert redirect_query(answer)["error"] == "invalid_request"


async def test_a_patient_user_cannot_use_a_launch_for_someone_else(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    launch = (await launch_for(browser, smart_app, {"patient": "bob"})).json()["launch"]
    params = authorize_params(Pkce(), EHR_SCOPE, launch=launch)
    answer = await log_in(browser, params, "alice")
    assert answer.status_code == 303
    assert redirect_query(answer)["error"] == "access_denied"
