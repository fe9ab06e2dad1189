"""Verifying a JWT access token an outside identity provider signed (RFC 7519, RFC
7515, RFC 9068 section 4).

Order: the header (an asymmetric algorithm from a fixed list, never `none` and never
HS*, whose "secret" could be the IdP's public key: RFC 8725 section 2.1 and 3.1), the
key its `kid` names in the IdP's key set (fetched again on an unknown `kid`, see
`external_jwks`), the signature with that key and only the header's algorithm (the
key's own `alg`, when the set gives one, must agree: RFC 7517 section 4.4), then the
claims (`external_claims.check_claims`). Every refusal is one `InvalidToken` with a
fixed reason; the library's message (which may quote the token) goes nowhere.
"""

from __future__ import annotations

from typing import Any

from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError

from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external_claims import Expected, check_claims
from fhirserver.auth.external_jwks import JwksCache
from fhirserver.clock import Clock

# RFC 7518 section 3.1 asymmetric signatures that identity providers use.
ALGORITHMS = frozenset({"RS256", "RS384", "ES256", "ES384", "PS256"})


async def verify_jwt(
    token: str, keys: JwksCache, expected: Expected, clock: Clock
) -> dict[str, Any]:
    """The claims of a token the IdP signed and that holds for this server now."""
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError, TypeError):
        raise InvalidToken("malformed") from None
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise InvalidToken("not signed with an accepted algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed")
    key = await keys.key(kid)
    if key is None:
        raise InvalidToken("signed by an unknown key")
    if key.get("alg") not in (None, algorithm):
        raise InvalidToken("not signed with an accepted algorithm")
    try:
        claims: dict[str, Any] = jwt.decode(token, key, algorithms=[algorithm]).claims
    except BadSignatureError:
        raise InvalidToken("bad signature") from None
    except (JoseError, ValueError, TypeError):
        # Includes a key of the wrong type or curve for the algorithm.
        raise InvalidToken("malformed") from None
    check_claims(claims, expected, clock(), essential=True)
    return claims
