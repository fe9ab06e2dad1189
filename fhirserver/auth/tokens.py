"""Access tokens and id_tokens, as JWTs signed with the server's keys.

An access token is a JWT in the shape of RFC 9068 (JWT Profile for OAuth 2.0 Access
Tokens): header `typ: at+jwt`, claims `iss` (this authorization server), `aud` (the FHIR
base URL), `sub`, `client_id`, `scope`, `iat`, `exp`, `jti`, plus SMART's launch context
(`patient`, `encounter`) and `fhirUser`. The `typ` keeps an id_token, signed with the
same keys, from ever passing as an access token.

Validation checks, in order: the header (RS256, `at+jwt`, a `kid` among the keys that
verify now, grace period included), the signature, then `exp`/`nbf`/`iat` with a small
leeway for clock skew, `iss`, `aud` and the presence of every claim. Any failure is one
`InvalidToken` with a fixed reason.

An id_token follows OpenID Connect Core section 2: `iss`, `sub`, `aud` (the client),
`exp`, `iat`, `nonce` when the authorization request had one, and SMART's `fhirUser`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    JoseError,
)
from joserfc.jwt import ClaimsOption

from fhirserver.auth.access import Access
from fhirserver.auth.claims import claims_refusal
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.keys import ALGORITHM, SigningKeys, verification_keys
from fhirserver.auth.scopes import parse_scopes
from fhirserver.clock import Clock

ACCESS_TOKEN_TYPE = "at+jwt"
ID_TOKEN_TYPE = "JWT"
# A bearer token travels in a header; one this long is not ours.
MAX_TOKEN_CHARS = 16 * 1024
_REQUIRED = ("iss", "aud", "sub", "client_id", "scope", "iat", "exp", "jti")
# Why a claim failed, said without repeating what the token claimed.
_CLAIM_REASONS = {
    "iss": "issued by another server",
    "aud": "meant for another audience",
    "nbf": "not valid yet",
    "iat": "issued in the future",
}


@dataclass(frozen=True)
class TokenSettings:
    """Who issues tokens, for whom, for how long, and how much clock skew to forgive."""

    issuer: str
    audience: str
    lifetime: timedelta = timedelta(minutes=15)
    leeway: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class IssuedToken:
    """A signed token and the `Access` it stands for (with its id and expiry)."""

    value: str = field(repr=False)
    access: Access


def mint_access_token(
    access: Access, keys: SigningKeys, settings: TokenSettings, clock: Clock
) -> IssuedToken:
    """Sign an access token for `access`; `sub` is its subject, else the client."""
    if not access.client_id:
        raise ValueError("An access token is issued to a client")
    if not str(access.scopes):
        # RFC 9068 requires the scope claim, and validation refuses an empty one.
        raise ValueError("An access token grants at least one scope")
    issued_at = _seconds(clock())
    expires = issued_at + int(settings.lifetime.total_seconds())
    token_id = secrets.token_urlsafe(16)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": access.subject or access.client_id,
        "client_id": access.client_id,
        "scope": str(access.scopes),
        "iat": issued_at,
        "exp": expires,
        "jti": token_id,
    }
    for claim, value in _context_claims(access).items():
        if value is not None:
            claims[claim] = value
    value = _sign(claims, ACCESS_TOKEN_TYPE, keys)
    issued = replace(
        access,
        subject=claims["sub"],
        scopes=parse_scopes(claims["scope"]),
        token_id=token_id,
        expires_at=datetime.fromtimestamp(expires, UTC),
    )
    return IssuedToken(value, issued)


def validate_access_token(
    token: str, keys: SigningKeys, settings: TokenSettings, clock: Clock
) -> Access:
    """The `Access` a bearer token grants; raises `InvalidToken` saying why not."""
    claims = _verified_claims(token, keys, clock)
    options: dict[str, ClaimsOption] = {name: {"essential": True} for name in _REQUIRED}
    options["iss"] = {"essential": True, "value": settings.issuer}
    options["aud"] = {"essential": True, "value": settings.audience}
    reason = claims_refusal(
        claims,
        options,
        now=clock(),
        leeway=settings.leeway,
        reasons=_CLAIM_REASONS,
        missing="a required claim is missing",
    )
    if reason is not None:
        raise InvalidToken(reason)
    return _access(claims)


def mint_id_token(
    keys: SigningKeys,
    settings: TokenSettings,
    clock: Clock,
    *,
    subject: str,
    client_id: str,
    fhir_user: str | None = None,
    nonce: str | None = None,
) -> str:
    """An OpenID Connect id_token for `client_id` about the user `subject`."""
    issued_at = _seconds(clock())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "sub": subject,
        "aud": client_id,
        "iat": issued_at,
        "exp": issued_at + int(settings.lifetime.total_seconds()),
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if fhir_user is not None:
        claims["fhirUser"] = fhir_user
    return _sign(claims, ID_TOKEN_TYPE, keys)


def _sign(claims: dict[str, Any], token_type: str, keys: SigningKeys) -> str:
    key = keys.current
    header = {"alg": ALGORITHM, "typ": token_type, "kid": key.kid}
    return jwt.encode(header, claims, key.key, algorithms=[ALGORITHM])


def _verified_claims(token: str, keys: SigningKeys, clock: Clock) -> dict[str, Any]:
    """The claims of a token whose header and signature check out."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("malformed")
    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, UnicodeError) as error:
        raise InvalidToken("malformed") from error
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("not signed the way this server signs")
    if header.get("typ") != ACCESS_TOKEN_TYPE:
        raise InvalidToken("not an access token")
    key = verification_keys(keys, clock).get(str(header.get("kid")))
    if key is None:
        raise InvalidToken("signed by an unknown key")
    try:
        return jwt.decode(token, key, algorithms=[ALGORITHM]).claims
    except BadSignatureError as error:
        raise InvalidToken("bad signature") from error
    except (JoseError, ValueError) as error:
        raise InvalidToken("malformed") from error


def _context_claims(access: Access) -> dict[str, str | None]:
    return {"patient": access.patient, "encounter": access.encounter, "fhirUser": access.user}


def _access(claims: dict[str, Any]) -> Access:
    strings = ("sub", "client_id", "scope", "jti", "patient", "encounter", "fhirUser")
    if any(name in claims and not isinstance(claims[name], str) for name in strings):
        raise InvalidToken("malformed claims")
    return Access(
        client_id=claims["client_id"],
        scopes=parse_scopes(claims["scope"]),
        subject=claims["sub"],
        user=claims.get("fhirUser"),
        patient=claims.get("patient"),
        encounter=claims.get("encounter"),
        token_id=claims["jti"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def _seconds(moment: datetime) -> int:
    """A NumericDate (RFC 7519 section 2): whole seconds since the epoch."""
    return int(moment.timestamp())
