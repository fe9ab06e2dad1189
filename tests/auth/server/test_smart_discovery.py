"""Discovery (SMART App Launch 2.2 conformance.html): `[base]/.well-known/smart-configuration`
and the CapabilityStatement's `rest.security`, public in smart and external mode; the
JWKS (RFC 7517 section 5) with public keys only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.auth.server import AuthServer
from fhirserver.config import Settings

WELL_KNOWN = "/fhir/.well-known/smart-configuration"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


async def test_smart_configuration_names_what_is_supported(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    answer = await http.get(WELL_KNOWN)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    urls = auth_server.urls
    assert document["issuer"] == urls.issuer
    assert document["token_endpoint"] == urls.token == "http://127.0.0.1:8080/auth/token"
    assert document["authorization_endpoint"] == urls.authorize
    assert document["jwks_uri"] == urls.jwks
    assert document["introspection_endpoint"] == urls.introspect
    assert document["revocation_endpoint"] == urls.revoke
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["response_types_supported"] == ["code"]
    assert set(document["grant_types_supported"]) == {
        "authorization_code",
        "client_credentials",
        "refresh_token",
    }
    assert set(document["token_endpoint_auth_methods_supported"]) >= {
        "private_key_jwt",
        "client_secret_basic",
    }
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {"launch/patient", "offline_access", "system/*.rs", "openid"} <= set(
        document["scopes_supported"]
    )
    assert {
        "launch-standalone",
        "launch-ehr",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-standalone-patient",
        "context-ehr-patient",
        "sso-openid-connect",
        "permission-offline",
        "permission-v1",
        "permission-v2",
    } <= set(document["capabilities"])


async def test_the_jwks_has_public_keys_only(http: httpx.AsyncClient) -> None:
    document = (await http.get("/auth/jwks")).json()
    [key] = document["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and key["kid"]
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_the_capability_statement_says_smart_on_fhir(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    statement = (
        await http.get("/fhir/metadata", headers={"Accept": "application/fhir+json"})
    ).json()
    security = statement["rest"][0]["security"]
    [service] = security["service"]
    assert service["coding"][0]["system"] == SECURITY_SERVICE
    assert service["coding"][0]["code"] == "SMART-on-FHIR"
    [extension] = [e for e in security["extension"] if e["url"] == OAUTH_URIS]
    uris = {e["url"]: e["valueUri"] for e in extension["extension"]}
    urls = auth_server.urls
    assert uris == {
        "authorize": urls.authorize,
        "token": urls.token,
        "introspect": urls.introspect,
        "revoke": urls.revoke,
    }


@pytest.fixture
async def external_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        store=str(tmp_path / "fhir.sqlite"),
        auth="external",
        auth_issuer="https://idp.example",
        auth_jwks_url="https://idp.example/jwks",
        auth_introspection_url="https://idp.example/introspect",
        run_jobs=False,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_external_mode_points_at_the_outside_issuer(external_http: httpx.AsyncClient) -> None:
    document = (await external_http.get(WELL_KNOWN)).json()
    assert document["issuer"] == "https://idp.example"
    assert document["jwks_uri"] == "https://idp.example/jwks"
    assert document["introspection_endpoint"] == "https://idp.example/introspect"
    # The built-in server is not there.
    assert (await external_http.post("/auth/token")).status_code == 404
    assert (await external_http.get("/auth/jwks")).status_code == 404


@pytest.fixture
async def off_http(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(store=str(tmp_path / "fhir.sqlite"), run_jobs=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_with_authorization_off_nothing_is_advertised(off_http: httpx.AsyncClient) -> None:
    assert (await off_http.get(WELL_KNOWN)).status_code == 404
    assert (await off_http.post("/auth/token")).status_code == 404
    statement = (await off_http.get("/fhir/metadata")).json()
    assert "service" not in statement["rest"][0]["security"]
