"""Opaque access tokens, asked about at the identity provider (RFC 7662).

The request (section 2.1) is a form POST of `token` and `token_type_hint=access_token`,
authenticated as this server with HTTP Basic: client id and secret each
form-urlencoded first (RFC 6749 section 2.3.1). The answer (section 2.2) counts only
with `"active": true`; its claims are checked and mapped like a JWT's
(`external_claims`). A `token_type` other than an access token's (an IdP may answer
for a refresh token too) is refused.

Positive answers are kept until the token expires, but at most a minute (section
4: a cache trades freshness, a revocation takes up to that long to be seen, for load
on the IdP). They are keyed by the token's SHA-256, never the token, and the cache
is bounded. Negative answers are not kept.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external_claims import Expected, check_claims
from fhirserver.auth.external_fetch import fetch_json
from fhirserver.clock import Clock

CACHE_FOR = timedelta(seconds=60)
MAX_CACHED = 10_000
# RFC 6749 section 7.1 / RFC 6750: what an access token's type is called.
_ACCESS_TOKEN_TYPES = frozenset(
    {"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"}
)


@dataclass(frozen=True)
class IntrospectionClient:
    """The introspection endpoint and this server's credentials there."""

    url: str
    client_id: str
    client_secret: str

    def authorization(self) -> str:
        pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


@dataclass(frozen=True)
class _Cached:
    claims: dict[str, Any]
    until: datetime


class Introspector:
    """Asks the IdP about opaque tokens, remembering the active ones a while."""

    def __init__(
        self,
        client: IntrospectionClient,
        http: httpx.AsyncClient,
        expected: Expected,
        clock: Clock,
    ) -> None:
        self._client = client
        self._http = http
        self._expected = expected
        self._clock = clock
        self._cache: dict[bytes, _Cached] = {}

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of an active token that holds for this server now; raises
        `InvalidToken` otherwise and `IdPUnavailable` when the IdP cannot answer."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None:
            if now < cached.until:
                return cached.claims
            del self._cache[digest]
        answer = await fetch_json(
            self._http,
            "POST",
            self._client.url,
            form={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": self._client.authorization()},
        )
        claims = answer.body
        if claims.get("active") is not True:
            raise InvalidToken("not active")
        token_type = claims.get("token_type")
        if token_type is not None and str(token_type).lower() not in _ACCESS_TOKEN_TYPES:
            raise InvalidToken("not an access token")
        check_claims(claims, self._expected, now, essential=False)
        self._remember(digest, claims, now)
        return claims

    def _remember(self, digest: bytes, claims: dict[str, Any], now: datetime) -> None:
        until = now + CACHE_FOR
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            with contextlib.suppress(OverflowError, OSError, ValueError):
                until = min(until, datetime.fromtimestamp(exp, UTC))
        if until <= now:
            return
        if len(self._cache) >= MAX_CACHED:
            self._evict(now)
        self._cache[digest] = _Cached(claims, until)

    def _evict(self, now: datetime) -> None:
        """Drop expired entries; if none had expired, the oldest tenth."""
        expired = [digest for digest, entry in self._cache.items() if entry.until <= now]
        for digest in expired or list(self._cache)[: MAX_CACHED // 10]:
            del self._cache[digest]
