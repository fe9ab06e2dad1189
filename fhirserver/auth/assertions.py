"""Client assertions for SMART backend services (`private_key_jwt`).

SMART App Launch 2.2.0 client-confidential-asymmetric.html, over RFC 7523 section 3:
the client signs a one-time JWT with a key from the JWK Set it registered, and the
token endpoint checks, in this order:

1. the header: `alg` RS384 or ES384 (SMART's two; `none`, HMACs and everything else
   refused), a `kid`, `typ` JWT when present, and no `jku` (a JWK Set URL must match
   the one registered; with a registered JWK Set there is none to match);
2. the key: among the registered keys, exactly one whose `kid` matches and whose
   type fits the algorithm ("Signature Verification" step 3), RSA keys of 2048 bits
   or more;
3. the signature;
4. the claims: `iss` and `sub` both the client_id, `aud` the token URL, `exp` present,
   not passed and "no more than five minutes in the future", `jti` present, `nbf` and
   `iat` (when present) not in the future; clock skew forgiven up to a small leeway;
5. replay: the `jti` must not have been seen for this client before; that is asked
   last, so that nothing unsigned can use up a client's `jti` values.

Every failure is one `InvalidClient` (RFC 6749 section 5.2 `invalid_client`, as SMART
requires) with a fixed reason that quotes neither the assertion nor any key.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    JoseError,
)
from joserfc.jwk import ECKey, RSAKey
from joserfc.jwt import ClaimsOption

from fhirserver.auth.claims import claims_refusal
from fhirserver.auth.errors import InvalidClient
from fhirserver.clock import Clock

# SMART: clients SHALL support both; servers validate at least one.
ALGORITHMS = {"RS384": "RSA", "ES384": "EC"}
EC_CURVE = "P-384"
MIN_RSA_BITS = 2048
# "This time SHALL be no more than five minutes in the future."
MAX_LIFETIME = timedelta(minutes=5)
DEFAULT_LEEWAY = timedelta(seconds=30)
MAX_ASSERTION_CHARS = 8 * 1024
MAX_JTI_CHARS = 255
# Whether `jti` was seen before for this client, recording it (until `exp`) if not.
# The store answers and records in one atomic step (an insert that fails on a
# duplicate), and keys it by the client, as SMART says: "for the given iss".
SeenBefore = Callable[[str, datetime], Awaitable[bool]]

_CLAIM_REASONS = {
    "iss": "iss is not the client_id",
    "sub": "sub is not the client_id",
    "aud": "aud is not this token endpoint",
    "exp": "exp is not a time",
    "nbf": "not valid yet",
    "iat": "issued in the future",
    "jti": "jti is not a non-empty string",
}


@dataclass(frozen=True)
class ClientAssertion:
    """A verified assertion: the client it authenticates, its id and expiry."""

    client_id: str
    jti: str
    expires_at: datetime


async def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    jwks: Mapping[str, Any],
    token_url: str,
    clock: Clock,
    seen_before: SeenBefore,
    leeway: timedelta = DEFAULT_LEEWAY,
) -> ClientAssertion:
    """Check `assertion` as `client_id`'s authentication at `token_url`, against the
    JWK Set it registered; raises `InvalidClient` saying why not."""
    header = _header(assertion)
    key = _registered_key(jwks, header["kid"], header["alg"])
    try:
        claims = jwt.decode(assertion, key, algorithms=[header["alg"]]).claims
    except BadSignatureError as error:
        raise InvalidClient("signature does not verify") from error
    except (JoseError, ValueError) as error:
        raise InvalidClient("malformed client assertion") from error
    now = clock()
    _check_claims(claims, client_id, token_url, now, leeway)
    # Compared as numbers first: a far-off exp is no datetime at all.
    if claims["exp"] > (now + MAX_LIFETIME + leeway).timestamp():
        raise InvalidClient("exp is more than five minutes away")
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    if await seen_before(claims["jti"], expires_at):
        raise InvalidClient("jti already used")
    return ClientAssertion(client_id, claims["jti"], expires_at)


def _header(assertion: str) -> dict[str, Any]:
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise InvalidClient("malformed client assertion")
    try:
        header = dict(jws.extract_compact(assertion.encode()).headers())
    except (JoseError, ValueError, UnicodeError) as error:
        raise InvalidClient("malformed client assertion") from error
    if header.get("alg") not in ALGORITHMS:
        raise InvalidClient("client assertion must be signed with RS384 or ES384")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise InvalidClient("client assertion header has no kid")
    if header.get("typ", "JWT") != "JWT":
        raise InvalidClient("client assertion typ is not JWT")
    if "jku" in header:
        raise InvalidClient("jku is not registered for this client")
    return header


def _registered_key(jwks: Mapping[str, Any], kid: str, alg: str) -> RSAKey | ECKey:
    """The one registered key with this kid whose type fits the algorithm."""
    keys = jwks.get("keys")
    candidates = [
        entry
        for entry in (keys if isinstance(keys, list) else [])
        if isinstance(entry, dict) and entry.get("kid") == kid and _fits(entry, alg)
    ]
    if len(candidates) != 1:
        raise InvalidClient("no single registered key matches the kid and algorithm")
    if ALGORITHMS[alg] == "RSA" and _modulus_bits(candidates[0]) < MIN_RSA_BITS:
        raise InvalidClient("the registered RSA key is shorter than 2048 bits")
    try:
        key: RSAKey | ECKey = (
            RSAKey.import_key(candidates[0])
            if ALGORITHMS[alg] == "RSA"
            else ECKey.import_key(candidates[0])
        )
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidClient("the registered key cannot be read") from error
    return key


def _modulus_bits(entry: dict[str, Any]) -> int:
    """The size of an RSA JWK's modulus (RFC 7518 section 6.3.1.1: big-endian, no
    leading zero octets), read before import so that a weak key is refused as such."""
    modulus = entry.get("n")
    if not isinstance(modulus, str):
        return 0
    try:
        return len(base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))) * 8
    except (binascii.Error, ValueError):
        return 0


def _fits(entry: dict[str, Any], alg: str) -> bool:
    """Key type consistent with the algorithm, and not limited to other uses."""
    if entry.get("kty") != ALGORITHMS[alg]:
        return False
    if ALGORITHMS[alg] == "EC" and entry.get("crv") != EC_CURVE:
        return False
    operations = entry.get("key_ops")
    return (
        entry.get("use", "sig") == "sig"
        and entry.get("alg", alg) == alg
        and (operations is None or (isinstance(operations, list) and "verify" in operations))
    )


def _check_claims(
    claims: dict[str, Any], client_id: str, token_url: str, now: datetime, leeway: timedelta
) -> None:
    options: dict[str, ClaimsOption] = {
        "iss": {"essential": True, "value": client_id},
        "sub": {"essential": True, "value": client_id},
        "aud": {"essential": True, "value": token_url},
        "exp": {"essential": True},
        "jti": {"essential": True},
    }
    reason = claims_refusal(
        claims,
        options,
        now=now,
        leeway=leeway,
        reasons=_CLAIM_REASONS,
        missing="a required claim (iss, sub, aud, exp, jti) is missing",
    )
    if reason is not None:
        raise InvalidClient(reason)
    if len(claims["jti"]) > MAX_JTI_CHARS:
        raise InvalidClient("jti is too long")
