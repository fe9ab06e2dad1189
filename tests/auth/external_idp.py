"""A stand-in identity provider for external mode's tests, served for real by uvicorn
on a loopback port: an OpenID discovery document (OpenID Connect Discovery 1.0
section 4), a JWK Set (RFC 7517 section 5) and an RFC 7662 introspection endpoint.
It counts the requests it answers, so tests can see how often the server asks; it
mints its tokens with joserfc, as a real IdP's library would."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tests.clock import MovableClock
from tests.loopback import on_loopback

CLIENT_ID = "fhir-server"
CLIENT_SECRET = "s3cret:with/odd&chars"
WAIT = 10.0


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig"})


def ec_key(kid: str, curve: str = "P-256") -> ECKey:
    return ECKey.generate_key(curve, parameters={"kid": kid, "use": "sig"})


@dataclass
class FakeIdP:
    """What the IdP publishes and answers; tests change it while it runs."""

    keys: list[Key] = field(default_factory=lambda: [rsa_key("key-1")])
    # The issuer its discovery document names; "" is its own URL (as it should be).
    claimed_issuer: str = ""
    # Members that replace what the discovery document would say.
    discovery_overrides: dict[str, Any] = field(default_factory=dict)
    # Answer every request with HTTP 500 (an IdP having a bad day).
    failing: bool = False
    cache_control: str = ""
    with_introspection: bool = True
    # Introspection answers by token; a token not here is `{"active": false}`.
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    # What the introspection endpoint was sent, last time.
    introspected: dict[str, str] = field(default_factory=dict)
    url: str = ""

    def mint(
        self,
        claims: dict[str, Any],
        *,
        key: Key | None = None,
        alg: str = "RS256",
        **header: Any,
    ) -> str:
        """A token signed with `key` (default: the first published key), its `kid`
        in the header unless the test gives another (or None to leave it out)."""
        signer = key or self.keys[0]
        full: dict[str, Any] = {"alg": alg, "kid": signer.kid, **header}
        if full["kid"] is None:
            del full["kid"]
        return jwt.encode(full, claims, signer, algorithms=[alg])

    def app(self) -> ASGIApp:
        async def discovery(request: Request) -> Response:
            self.requests["discovery"] += 1
            document = {
                "issuer": self.claimed_issuer or self.url,
                "jwks_uri": f"{self.url}/jwks",
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
            }
            if self.with_introspection:
                document["introspection_endpoint"] = f"{self.url}/introspect"
            document.update(self.discovery_overrides)
            return JSONResponse(document)

        async def jwks(request: Request) -> Response:
            self.requests["jwks"] += 1
            headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
            body = {"keys": [key.as_dict(private=False) for key in self.keys]}
            return JSONResponse(body, headers=headers)

        async def introspect(request: Request) -> Response:
            self.requests["introspect"] += 1
            if request.headers.get("authorization") != _basic(CLIENT_ID, CLIENT_SECRET):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            self.introspected = dict(parse_qsl((await request.body()).decode()))
            answer = self.answers.get(self.introspected.get("token", ""), {"active": False})
            return JSONResponse(answer)

        async def maybe_failing(scope: Any, receive: Any, send: Any) -> None:
            if self.failing and scope["type"] == "http":
                self.requests["failed"] += 1
                await Response("down for maintenance", status_code=500)(scope, receive, send)
            else:
                await app(scope, receive, send)

        app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/jwks", jwks),
                Route("/introspect", introspect, methods=["POST"]),
            ]
        )
        return maybe_failing


def _basic(client_id: str, secret: str) -> str:
    """RFC 6749 section 2.3.1: the pair form-urlencoded, then HTTP Basic."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


@asynccontextmanager
async def serving(idp: FakeIdP) -> AsyncIterator[FakeIdP]:
    """The IdP on 127.0.0.1 (a port of the system's choosing) until the block ends;
    `idp.url` is its base URL, which is also its issuer."""
    async with on_loopback(idp.app()) as port:
        idp.url = f"http://127.0.0.1:{port}"
        yield idp


# Shared by the external-mode suites: the IdP on a loopback port, a fixed clock and an
# HTTP client for the authenticator.
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
AUDIENCE = "https://fhir.example.org/fhir"


@pytest.fixture
def clock() -> MovableClock:
    clock = MovableClock()
    clock.move_to(T0)
    return clock


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdP]:
    async with serving(FakeIdP()) as running:
        yield running
