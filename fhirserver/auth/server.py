"""The built-in authorization server's context: what every endpoint needs (the store,
the clock, its URLs, token lifetimes, the signing keys) in one value, made once per app
from the settings (`make_auth_server`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from fhirserver.auth.keys import DEFAULT_GRACE, SigningKeys
from fhirserver.auth.keystore import DEFAULT_ROTATE_AFTER, KeyCache, signing_keys
from fhirserver.auth.tokens import TokenSettings
from fhirserver.auth.urls import AuthUrls, auth_urls
from fhirserver.clock import Clock
from fhirserver.config import Settings
from fhirserver.storage.base import Store

# A client's JWK Set fetched from its registered URL (SMART client-confidential-asymmetric
# "jwks_uri"); raises `JwksUnavailable` when it cannot be had.
JwksFetcher = Callable[[str], Awaitable[dict[str, Any]]]
_MAX_JWKS_BYTES = 64 * 1024
_JWKS_TIMEOUT = httpx.Timeout(5.0)


class JwksUnavailable(Exception):
    """A client's JWKS URL did not answer with a JWK Set."""


@dataclass(frozen=True)
class AuthServer:
    store: Store
    clock: Clock
    urls: AuthUrls
    tokens: TokenSettings
    refresh_lifetime: timedelta
    fetch_jwks: JwksFetcher
    # Authorization codes "SHOULD expire shortly ... a maximum lifetime of 10 minutes"
    # (RFC 6749 section 4.1.2); this server says one minute.
    code_lifetime: timedelta = timedelta(minutes=1)
    launch_lifetime: timedelta = timedelta(minutes=5)
    key_grace: timedelta = DEFAULT_GRACE
    rotate_keys_after: timedelta = DEFAULT_ROTATE_AFTER
    key_cache: KeyCache = field(default_factory=KeyCache, compare=False, repr=False)

    async def signing_keys(self) -> SigningKeys:
        return await signing_keys(
            self.store,
            self.clock,
            grace=self.key_grace,
            rotate_after=self.rotate_keys_after,
            cache=self.key_cache,
        )


def make_auth_server(
    settings: Settings,
    store: Store,
    clock: Clock,
    fetch_jwks: JwksFetcher | None = None,
) -> AuthServer:
    urls = auth_urls(settings)
    lifetime = timedelta(minutes=settings.auth_access_token_minutes)
    return AuthServer(
        store=store,
        clock=clock,
        urls=urls,
        # Tokens are for this FHIR server: `aud` is its base URL (SMART app-launch.html).
        tokens=TokenSettings(urls.issuer, settings.auth_audience or urls.fhir_base, lifetime),
        refresh_lifetime=timedelta(days=settings.auth_refresh_token_days),
        fetch_jwks=fetch_jwks or fetch_jwks_over_http,
        # A retired key verifies for as long as the longest token it signed lives.
        key_grace=max(DEFAULT_GRACE, lifetime + timedelta(minutes=5)),
    )


async def fetch_jwks_over_http(url: str) -> dict[str, Any]:
    """GET a client's JWK Set: no redirects, a short timeout, a size limit."""
    try:
        async with (
            httpx.AsyncClient(timeout=_JWKS_TIMEOUT, follow_redirects=False) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise JwksUnavailable("the JWKS URL did not answer 200")
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_JWKS_BYTES:
                    raise JwksUnavailable("the JWK Set is too large")
    except httpx.HTTPError as error:
        raise JwksUnavailable("the JWKS URL cannot be reached") from error
    try:
        document = httpx.Response(200, content=body).json()
    except ValueError as error:
        raise JwksUnavailable("the JWKS URL did not answer with JSON") from error
    if not isinstance(document, dict):
        raise JwksUnavailable("the JWKS URL did not answer with a JWK Set")
    return document
