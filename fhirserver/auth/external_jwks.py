"""The identity provider's public keys (RFC 7517 JWK Set), fetched and kept a while.

The set is kept for the time its Cache-Control `max-age` says, bounded: at least a
minute (an IdP saying `no-store` must not cost a fetch per request) and at most an
hour (a key the IdP withdrew stops verifying within the hour). A token naming a key
the set lacks (`kid`, RFC 7515 section 4.1.4) is the sign of a key rotation at the
IdP (OpenID Connect Core section 10.1.1: "the verifier knows to go back to the
jwks_uri location to re-retrieve the keys"), so the set is fetched again at once,
but no more often than every 30 seconds: a flood of tokens with made-up `kid`s costs
the IdP at most one request per 30 seconds. After a failed fetch the next try waits
a few seconds too; meanwhile a set past its time still verifies the keys it holds,
while a token naming another key, or any token with no set at all, is answered 503
(`IdPUnavailable`): whether the IdP has that key cannot be known.

Time is the injected clock's. A clock that jumps backwards counts as "long ago", so
it cannot freeze the cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet, RSAKey

from fhirserver.auth.external_fetch import Fetched, IdPUnavailable
from fhirserver.clock import Clock

logger = logging.getLogger("fhirserver.auth")

DEFAULT_TTL = timedelta(minutes=5)
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(hours=1)
# An unknown `kid` fetches the set again at most this often.
REFETCH_INTERVAL = timedelta(seconds=30)
# After a fetch failed, the next try waits this long.
RETRY_INTERVAL = timedelta(seconds=5)
# The key types of `external_jwt.ALGORITHMS`.
_VERIFYING_KEY_TYPES = (RSAKey, ECKey)

Fetch = Callable[[], Awaitable[Fetched]]


@dataclass(frozen=True)
class _Held:
    keys: tuple[Key, ...]
    expires_at: datetime


class JwksCache:
    """The current key set of one identity provider; `fetch` gets it (its URL may
    only be known after discovery, so the caller supplies how)."""

    def __init__(self, fetch: Fetch, clock: Clock) -> None:
        self._fetch = fetch
        self._clock = clock
        self._held: _Held | None = None
        self._attempted_at: datetime | None = None
        self._attempt_failed = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> Key | None:
        """The key that verifies a token naming `kid` (None: the token names no key,
        which only a set of exactly one key can answer); None when the IdP has no
        such key. Raises `IdPUnavailable` when there is no key set to ask, or when the
        key is unknown and the last fetch failed."""
        held = await self._current()
        found = _find(held.keys, kid)
        if found is None and self._may_refetch():
            async with self._lock:
                # Another request may have fetched the set while this one waited. A
                # failed fetch is a 503: whether the IdP has that key is unknown.
                held = await self._refresh() if self._may_refetch() else (self._held or held)
            found = _find(held.keys, kid)
        if found is None and self._attempt_failed:
            # The set held may be out of date and the IdP cannot say: a 503, not a 401.
            raise IdPUnavailable()
        return found

    async def prime(self) -> None:
        """Fetch the key set now (start-up), so a bad URL shows before any request."""
        async with self._lock:
            await self._refresh()

    async def _current(self) -> _Held:
        held = self._held
        if held is not None and self._clock() < held.expires_at:
            return held
        async with self._lock:
            held = self._held
            if held is not None and self._clock() < held.expires_at:
                return held
            if self._since_attempt() < RETRY_INTERVAL and self._attempt_failed:
                if held is not None:
                    return held  # the IdP failed a moment ago; an old set still verifies
                raise IdPUnavailable()
            try:
                return await self._refresh()
            except IdPUnavailable:
                if held is not None:
                    return held
                raise

    def _may_refetch(self) -> bool:
        interval = RETRY_INTERVAL if self._attempt_failed else REFETCH_INTERVAL
        return self._since_attempt() >= interval

    def _since_attempt(self) -> timedelta:
        """How long since the last fetch began; a clock that went backwards (or no
        fetch yet) counts as forever."""
        if self._attempted_at is None:
            return timedelta.max
        elapsed = self._clock() - self._attempted_at
        return elapsed if elapsed >= timedelta(0) else timedelta.max

    async def _refresh(self) -> _Held:
        """Fetch the set (the lock held); raises `IdPUnavailable` when that fails."""
        self._attempted_at = self._clock()
        try:
            fetched = await self._fetch()
            keys = _verifying_keys(fetched.body)
        except IdPUnavailable:
            self._attempt_failed = True
            raise
        self._attempt_failed = False
        held = _Held(keys, self._clock() + _ttl(fetched.max_age))
        self._held = held
        return held


def _ttl(max_age: int | None) -> timedelta:
    if max_age is None:
        return DEFAULT_TTL
    return min(max(timedelta(seconds=max_age), MIN_TTL), MAX_TTL)


def _find(keys: tuple[Key, ...], kid: str | None) -> Key | None:
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((key for key in keys if key.kid == kid), None)


def _verifying_keys(document: dict[str, Any]) -> tuple[Key, ...]:
    """The set's public signing keys. A key this server cannot read (an unknown `kty`,
    a symmetric `oct` key, one marked `use: enc`) is skipped, not fatal: the IdP may
    publish keys for other purposes beside the ones that sign tokens."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        logger.warning("the identity provider's key set has no keys list")
        raise IdPUnavailable()
    keys: list[Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
        try:
            key = KeySet.import_key_set({"keys": [public]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        if isinstance(key, _VERIFYING_KEY_TYPES):
            keys.append(key)
    if not keys:
        logger.warning("the identity provider's key set holds no signing key this server reads")
    return tuple(keys)


# RFC 7518 section 6.2.2 and 6.3.2: private members. A public set should not carry them;
# if it does, they are dropped rather than kept in this process's memory.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
