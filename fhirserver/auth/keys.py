"""The server's signing keys: one current key that signs, previous ones that still verify.

Keys are RSA, used with RS256: SMART's `sso-openid-connect` requires "Signing ID
Tokens with RSA SHA-256", and access tokens use the same keys. Each key's `kid` is its
RFC 7638 thumbprint, so a token names the key that verifies it.

Rotation makes a new current key; the one it replaces keeps verifying (and stays in
the published JWKS) for a grace period, which must outlast the longest-lived token it
signed. A key past its grace verifies nothing, whether or not it has been dropped yet.

Time comes from the injected clock (`fhirserver.clock.Clock`), and the whole set
exports to JSON and back so that a store can keep it; that JSON holds the private
keys and belongs nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from fhirserver.clock import Clock

ALGORITHM = "RS256"
_RSA_BITS = 2048
# An hour: longer than any access token or id_token this server issues.
DEFAULT_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class SigningKey:
    """One RSA key pair, when it was made, and when it stopped signing (None: it is
    the current key)."""

    key: RSAKey = field(repr=False)
    created_at: datetime
    retired_at: datetime | None = None

    @property
    def kid(self) -> str:
        kid = self.key.kid
        assert kid is not None  # every key is made or imported with one
        return kid

    def verifies_at(self, now: datetime, grace: timedelta) -> bool:
        return self.retired_at is None or now < self.retired_at + grace


@dataclass(frozen=True)
class SigningKeys:
    """The server's key set: `current` signs; `previous` (newest first) verify until
    their grace period after retirement ends."""

    current: SigningKey
    previous: tuple[SigningKey, ...] = ()
    grace: timedelta = DEFAULT_GRACE


def new_signing_key(clock: Clock) -> SigningKey:
    key = RSAKey.generate_key(_RSA_BITS, parameters={"alg": ALGORITHM, "use": "sig"})
    key.ensure_kid()
    return SigningKey(key, clock())


def new_signing_keys(clock: Clock, grace: timedelta = DEFAULT_GRACE) -> SigningKeys:
    return SigningKeys(new_signing_key(clock), (), grace)


def rotate(keys: SigningKeys, clock: Clock) -> SigningKeys:
    """A new current key; the old one retires now and verifies for the grace period;
    keys whose grace has ended are dropped."""
    now = clock()
    retired = replace(keys.current, retired_at=now)
    kept = tuple(k for k in (retired, *keys.previous) if k.verifies_at(now, keys.grace))
    return SigningKeys(new_signing_key(clock), kept, keys.grace)


def verification_keys(keys: SigningKeys, clock: Clock) -> dict[str, RSAKey]:
    """The public keys that verify tokens now, by kid."""
    now = clock()
    return {
        k.kid: _public(k.key)
        for k in (keys.current, *keys.previous)
        if k.verifies_at(now, keys.grace)
    }


def public_jwks(keys: SigningKeys, clock: Clock) -> dict[str, Any]:
    """The JWKS document to publish (RFC 7517 section 5): public parts only."""
    public = list(verification_keys(keys, clock).values())
    return dict(KeySet(list(public)).as_dict(private=False))


def export_private_keys(keys: SigningKeys) -> str:
    """The whole set, private keys included, as JSON for the store to keep."""
    return json.dumps(
        {
            "grace_seconds": int(keys.grace.total_seconds()),
            "keys": [
                {
                    "jwk": k.key.as_dict(private=True),
                    "created_at": k.created_at.isoformat(),
                    "retired_at": k.retired_at.isoformat() if k.retired_at else None,
                }
                for k in (keys.current, *keys.previous)
            ],
        }
    )


def import_private_keys(text: str) -> SigningKeys:
    """The set `export_private_keys` wrote. Raises ValueError, naming what is wrong but
    never quoting key material, when the JSON is not such a set."""
    try:
        data = json.loads(text)
        grace = timedelta(seconds=int(data["grace_seconds"]))
        loaded = [_import_key(entry) for entry in data["keys"]]
    except (ValueError, TypeError, KeyError, JoseError) as error:
        raise ValueError("Not a signing key set export") from error
    current = [k for k in loaded if k.retired_at is None]
    if len(current) != 1:
        raise ValueError("A signing key set has exactly one current key")
    if grace <= timedelta(0):
        raise ValueError("A signing key set's grace period is positive")
    return SigningKeys(current[0], tuple(k for k in loaded if k.retired_at is not None), grace)


def _import_key(entry: dict[str, Any]) -> SigningKey:
    key = RSAKey.import_key(entry["jwk"])
    if not key.is_private or key.kid is None or key.alg != ALGORITHM:
        raise ValueError("A signing key is a private RS256 key with a kid")
    created_at = _aware(datetime.fromisoformat(entry["created_at"]))
    retired = entry["retired_at"]
    retired_at = _aware(datetime.fromisoformat(retired)) if retired is not None else None
    return SigningKey(key, created_at, retired_at)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("Key times carry a time zone")
    return moment


def _public(key: RSAKey) -> RSAKey:
    return RSAKey.import_key(key.as_dict(private=False))
