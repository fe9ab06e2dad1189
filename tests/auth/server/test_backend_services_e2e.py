"""End to end, SMART App Launch 2.2 backend-services.html with a client written
against the specifications rather than this server: authlib's `AsyncOAuth2Client`
with RFC 7523 `private_key_jwt` (`authlib.oauth2.rfc7523.PrivateKeyJWT`, RS384),
against a real uvicorn on a loopback port. The client finds the token endpoint by
discovery, gets a token, then reads `[base]/metadata` and a resource with it. The
client is registered while the server runs, through a second connection to the store,
as `fhirserver clients add` does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fhirserver.app import create_app
from fhirserver.auth import admin
from fhirserver.auth.server import JwksUnavailable, fetch_jwks_over_http
from fhirserver.config import Settings
from fhirserver.storage.sqlite import SqliteStore
from tests.loopback import free_port, on_loopback

WAIT = 10.0
SCOPE = "system/Patient.cruds"


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[None]:
    async with on_loopback(app, port, lifespan="on"):
        yield


async def register(path: str, client_id: str, key: RSAKey) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        await admin.add_client(
            store,
            client_id,
            scopes=SCOPE,
            now=datetime.now(UTC),
            jwks={"keys": [key.as_dict(private=False)]},
        )
    finally:
        await store.close()


async def test_authlib_backend_service_reads_with_its_token(tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(
        host="127.0.0.1",
        port=port,
        store=str(tmp_path / "fhir.sqlite"),
        auth="smart",
        run_jobs=False,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    key = RSAKey.generate_key(2048, parameters={"kid": "e2e-key"})
    async with serving(create_app(settings), port):
        await register(settings.sqlite_path, "e2e-service", key)
        async with httpx.AsyncClient() as anonymous:
            configuration = (await anonymous.get(f"{base}/.well-known/smart-configuration")).json()
        token_endpoint = configuration["token_endpoint"]
        assert "private_key_jwt" in configuration["token_endpoint_auth_methods_supported"]

        client = AsyncOAuth2Client(
            "e2e-service", key, token_endpoint_auth_method="private_key_jwt", scope=SCOPE
        )
        # SMART: the assertion expires within five minutes (authlib's default is an hour).
        client.register_client_auth_method(
            PrivateKeyJWT(
                token_endpoint,
                alg="RS384",
                headers={"kid": "e2e-key"},
                claims={"exp": int(time.time()) + 240},
            )
        )
        async with client:
            token = await client.fetch_token(token_endpoint, grant_type="client_credentials")
            assert token["token_type"] == "Bearer" and token["scope"] == SCOPE
            metadata = await client.get(f"{base}/metadata")
            assert metadata.status_code == 200
            security = metadata.json()["rest"][0]["security"]
            assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
            created = await client.post(
                f"{base}/Patient",
                json={"resourceType": "Patient", "name": [{"family": "Backend"}]},
                headers={"Content-Type": "application/fhir+json"},
            )
            assert created.status_code == 201, created.text
            read = await client.get(f"{base}/Patient/{created.json()['id']}")
            assert read.status_code == 200 and read.json()["name"][0]["family"] == "Backend"
            assert client.token["access_token"] == token["access_token"]
            # The bearer token that went out is one the server's introspection accepts.
            assert read.request.headers["authorization"] == f"Bearer {token['access_token']}"


async def test_a_jwks_url_is_fetched_over_http_with_limits() -> None:
    """SMART client-confidential-asymmetric.html: keys at the client's registered
    `jwks_uri`, fetched with no redirects followed and a size limit."""
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})

    async def keys(request: Request) -> Response:
        return JSONResponse({"keys": [key.as_dict(private=False)]})

    async def huge(request: Request) -> Response:
        return JSONResponse({"keys": [], "padding": "x" * 100_000})

    async def moved(request: Request) -> Response:
        return RedirectResponse("/jwks")

    jwks_app = Starlette(
        routes=[Route("/jwks", keys), Route("/huge", huge), Route("/moved", moved)]
    )
    port = free_port()
    async with serving(jwks_app, port):
        base = f"http://127.0.0.1:{port}"
        assert await fetch_jwks_over_http(f"{base}/jwks") == {"keys": [key.as_dict(private=False)]}
        for path, why in (("/huge", "too large"), ("/moved", "did not answer 200")):
            with pytest.raises(JwksUnavailable, match=why):
                await fetch_jwks_over_http(base + path)
    with pytest.raises(JwksUnavailable, match="cannot be reached"):
        await fetch_jwks_over_http(f"http://127.0.0.1:{free_port()}/jwks")
