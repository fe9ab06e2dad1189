"""External mode end to end (issue 16 point 1; SMART App Launch 2.2 "scopes and launch
context" read from an outside identity provider's tokens): the app, configured only by
settings (`FHIRSERVER_AUTH=external`, the issuer's URL), takes a token the fake IdP on a
loopback port minted and confines the request to the token's patient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.auth.external_idp import FakeIdP, serving
from tests.clock import MovableClock

BASE = "https://fhir.example.org/fhir"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdP]:
    async with serving(FakeIdP()) as running:
        yield running


@pytest.fixture
async def http(idp: FakeIdP, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        store=str(tmp_path / "fhir.sqlite"),
        run_jobs=False,
        auth="external",
        auth_issuer=idp.url,
        public_url=BASE,
    )
    clock = MovableClock()
    clock.move_to(NOW)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir"
        ) as client:
            yield client


def _token(idp: FakeIdP, scope: str, **claims: Any) -> dict[str, str]:
    now = int(NOW.timestamp())
    token = idp.mint(
        {
            "iss": idp.url,
            "aud": BASE,
            "sub": "user-1",
            "client_id": "app",
            "scope": scope,
            "iat": now,
            "exp": now + 300,
            **claims,
        }
    )
    return {"Authorization": f"Bearer {token}"}


async def test_an_identity_providers_token_reaches_what_its_scopes_and_patient_allow(
    idp: FakeIdP, http: httpx.AsyncClient
) -> None:
    admin = _token(idp, "system/*.cruds")
    for patient in ("a", "b"):
        answer = await http.put(
            f"/Patient/{patient}", json={"resourceType": "Patient", "id": patient}, headers=admin
        )
        assert answer.status_code == 201, answer.text
    patient_a = _token(idp, "launch/patient patient/Patient.rs", patient="a")
    bundle = (await http.get("/Patient", headers=patient_a)).json()
    assert [entry["resource"]["id"] for entry in bundle["entry"]] == ["a"]
    assert (await http.get("/Patient/b", headers=patient_a)).status_code == 404
    assert (await http.get("/Observation", headers=patient_a)).status_code == 403


async def test_a_token_the_identity_provider_did_not_sign_is_401(
    idp: FakeIdP, http: httpx.AsyncClient
) -> None:
    answer = await http.get("/Patient", headers={"Authorization": "Bearer a.b.c"})
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    expired = _token(idp, "system/*.rs", exp=int(NOW.timestamp()) - 3600)
    assert (await http.get("/Patient", headers=expired)).status_code == 401
    assert (await http.get("/metadata")).status_code == 200


async def test_smart_discovery_names_the_identity_providers_endpoints(
    idp: FakeIdP, http: httpx.AsyncClient
) -> None:
    answer = await http.get("/.well-known/smart-configuration")
    assert answer.status_code == 200
    document = answer.json()
    assert document["issuer"] == idp.url
    assert document["authorization_endpoint"] == f"{idp.url}/authorize"
    assert document["token_endpoint"] == f"{idp.url}/token"
    assert document["code_challenge_methods_supported"] == ["S256"]
