"""`FHIRSERVER_AUTH=external`: access tokens from an identity provider that already
exists (Keycloak, Okta, Auth0, an EHR's authorization server), checked here.

A bearer token with three dot-separated parts is a JWT (RFC 7519 section 3 compact
serialization) and is verified against the IdP's published keys (`external_jwt`,
`external_jwks`); any other token is opaque and is asked about at the IdP's RFC 7662
introspection endpoint (`external_introspection`), when one is configured or
discovered. Either way the claims become an `Access` (`external_claims`).

Where the keys and the introspection endpoint are comes from the settings or from
OpenID discovery of `FHIRSERVER_AUTH_ISSUER` (`external_endpoints`), on first need
or at start-up (`prepare`). Settings that cannot work (a URL that is not https,
except on loopback; introspection without credentials) raise ValueError when the
authenticator is made, before the server listens.

A token that does not hold is `InvalidToken` (401); an IdP that cannot answer is
`IdPUnavailable` (503), so that a good token is not thrown away for the IdP's outage.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from fhirserver.auth.access import Access
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external_claims import Expected, access_from_claims
from fhirserver.auth.external_endpoints import (
    Endpoints,
    check_settings,
    configured_endpoints,
    discover_endpoints,
)
from fhirserver.auth.external_fetch import Fetched, IdPUnavailable, fetch_json
from fhirserver.auth.external_introspection import IntrospectionClient, Introspector
from fhirserver.auth.external_jwks import RETRY_INTERVAL, JwksCache
from fhirserver.auth.external_jwt import verify_jwt
from fhirserver.auth.tokens import MAX_TOKEN_CHARS
from fhirserver.clock import Clock
from fhirserver.config import Settings

# RFC 6750 section 2.1: the characters a bearer token is made of.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class ExternalAuthenticator:
    """An `Authenticator` (`fhirserver.auth.authenticate`) for tokens an outside IdP
    issued. `audience` is the `aud` tokens must name (`FHIRSERVER_AUTH_AUDIENCE`, else
    the FHIR base URL); `base_url` is the FHIR base URL that absolute `fhirUser` and
    launch-context references are read against (default: `audience`). `http` is the
    client for every request to the IdP (the caller owns and closes it; give it a
    timeout of a few seconds)."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        clock: Clock,
        audience: str,
        *,
        base_url: str = "",
    ) -> None:
        check_settings(settings)
        if not audience:
            raise ValueError("FHIRSERVER_AUTH=external needs an audience (the FHIR base URL)")
        self._settings = settings
        self._http = http
        self._clock = clock
        self._expected = Expected(settings.auth_issuer, audience, base_url or audience)
        self._endpoints = configured_endpoints(settings)
        self._discovery_failed_at: datetime | None = None
        self._discovery = asyncio.Lock()
        self._keys = JwksCache(self._fetch_keys, clock)
        self._introspector: Introspector | None = None

    async def __call__(self, token: str) -> Access:
        if len(token) > MAX_TOKEN_CHARS or not _BEARER_TOKEN.fullmatch(token):
            raise InvalidToken("malformed")
        if token.count(".") == 2:
            claims = await verify_jwt(token, self._keys, self._expected, self._clock)
        else:
            introspector = await self._opaque_tokens()
            if introspector is None:
                raise InvalidToken("not a JWT, and opaque tokens cannot be checked here")
            claims = await introspector.claims(token)
        return access_from_claims(claims, self._expected)

    async def prepare(self) -> None:
        """Discover the endpoints and fetch the key set now, so that a wrong issuer or
        an unreachable IdP shows at start-up. Raises `IdPUnavailable` (the log says
        why)."""
        await self._resolved()
        await self._keys.prime()

    async def issuer_metadata(self) -> Mapping[str, Any]:
        """The issuer's OpenID discovery document as far as it was read (empty when
        the endpoints are configured, or the IdP cannot be reached now)."""
        try:
            return (await self._resolved()).metadata
        except IdPUnavailable:
            return {}

    async def _resolved(self) -> Endpoints:
        if self._endpoints is not None:
            return self._endpoints
        async with self._discovery:
            if self._endpoints is not None:
                return self._endpoints
            if self._discovery_failed_recently():
                raise IdPUnavailable()
            try:
                self._endpoints = await discover_endpoints(self._settings, self._http)
            except IdPUnavailable:
                self._discovery_failed_at = self._clock()
                raise
            return self._endpoints

    def _discovery_failed_recently(self) -> bool:
        if self._discovery_failed_at is None:
            return False
        elapsed = self._clock() - self._discovery_failed_at
        return timedelta(0) <= elapsed < RETRY_INTERVAL

    async def _fetch_keys(self) -> Fetched:
        endpoints = await self._resolved()
        return await fetch_json(self._http, "GET", endpoints.jwks_url)

    async def _opaque_tokens(self) -> Introspector | None:
        if self._introspector is None:
            endpoints = await self._resolved()
            if not endpoints.introspection_url:
                return None
            if self._introspector is None:  # still: another request may have made it
                client = IntrospectionClient(
                    endpoints.introspection_url,
                    self._settings.auth_introspection_client_id,
                    self._settings.auth_introspection_client_secret,
                )
                self._introspector = Introspector(client, self._http, self._expected, self._clock)
        return self._introspector


async def external_authenticator(
    settings: Settings,
    http: httpx.AsyncClient,
    clock: Clock,
    audience: str,
    *,
    base_url: str = "",
) -> ExternalAuthenticator:
    """An authenticator for external mode, its endpoints discovered and key set fetched
    already. Raises ValueError for settings that cannot work and `IdPUnavailable`
    when the IdP cannot be reached or its discovery document is not the issuer's."""
    authenticator = ExternalAuthenticator(settings, http, clock, audience, base_url=base_url)
    await authenticator.prepare()
    return authenticator
