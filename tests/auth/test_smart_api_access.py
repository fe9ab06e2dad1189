"""A token from the built-in authorization server, used on the FHIR API (SMART App
Launch 2.2 app-launch.html "Access protected data", scopes-and-launch-context.html;
RFC 7009 for revocation): the whole path a patient-facing app takes, from the login
page to reading its own record and nobody else's."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from tests.auth.browser import (
    CLIENT_ID,
    Pkce,
    app_clock,
    authorize_params,
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

__all__ = ["app_clock", "backend", "browser", "smart_app"]


async def _alices_token(browser: httpx.AsyncClient) -> str:
    pkce = Pkce()
    params = authorize_params(pkce, "launch/patient offline_access patient/*.rs")
    approval = await log_in(browser, params, "alice")
    form = only_form(approval)
    answer = await submit(browser, form, form.submission(decision="approve"))
    tokens = await exchange(browser, redirect_query(answer)["code"], pkce)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["patient"] == "alice"
    token: str = tokens.json()["access_token"]
    return token


async def test_a_patient_app_reads_its_patients_record_and_nobody_elses(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    for patient in ("alice", "bob"):
        await put_resource(
            smart_app,
            {
                "resourceType": "Observation",
                "id": f"obs-{patient}",
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": f"Patient/{patient}"},
            },
        )
    bearer = {"Authorization": f"Bearer {await _alices_token(browser)}"}
    patients = (await browser.get("/fhir/Patient", headers=bearer)).json()
    assert [entry["resource"]["id"] for entry in patients["entry"]] == ["alice"]
    observations = (await browser.get("/fhir/Observation", headers=bearer)).json()
    assert [entry["resource"]["id"] for entry in observations["entry"]] == ["obs-alice"]
    assert (await browser.get("/fhir/Patient/bob", headers=bearer)).status_code == 404
    # patient/*.rs: reading only.
    created = await browser.post(
        "/fhir/Observation",
        json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
        headers=bearer,
    )
    assert created.status_code == 403


async def test_a_revoked_token_no_longer_opens_the_api(browser: httpx.AsyncClient) -> None:
    token = await _alices_token(browser)
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await browser.get("/fhir/Patient/alice", headers=bearer)).status_code == 200
    revoked = await browser.post("/auth/revoke", data={"token": token, "client_id": CLIENT_ID})
    assert revoked.status_code == 200
    answer = await browser.get("/fhir/Patient/alice", headers=bearer)
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
