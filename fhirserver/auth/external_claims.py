"""An outside identity provider's token claims, checked and read as an `Access`.

The same claims arrive in a JWT access token's payload or in an RFC 7662
introspection answer, so one module checks and maps both.

Checks (RFC 7519 section 4.1, RFC 9068 section 4, RFC 7662 section 2.2): `exp` in the
future, `nbf` and `iat` not in the future (with a small leeway for clock skew, on the
injected clock), `iss` the configured issuer, `aud` naming this server. A JWT must
carry `exp` and `aud` (and `iss` when an issuer is configured); an introspection
answer is checked on whichever of them it carries, since RFC 7662 makes them all
optional and the IdP has vouched for the token itself.

Mapping, by the names identity providers actually use:
- scopes: `scope`, a space-separated string (RFC 9068 section 2.2.3, RFC 8693
  section 4.2, RFC 7662), else `scp`, a list of strings as Okta issues it
  (developer.okta.com/docs/reference/api/oidc "Access token scopes and claims") or
  one string;
- client: `client_id` (RFC 9068, RFC 7662), else `azp` (OpenID Connect Core section
  2; Keycloak, Auth0), else `cid` (Okta);
- `sub`; `jti` (the token's id); `exp` (its expiry);
- user: `fhirUser` (SMART App Launch 2.2 "Scopes for requesting identity data"), or
  `fhir_user`;
- launch context: `patient` and `encounter` (SMART "Launch context arrives with your
  access_token"), else `launch_response_patient` / `launch_response_encounter`, the
  names Okta's SMART reference implementation puts into its access tokens
  (github.com/oktadev/okta-smartfhir-demo, the token hook) and AWS's FHIR Works
  SMART authorizer reads (fhir-works-on-aws-authz-smart, `launchContextPathPrefix`).
  Context nested under a `context` or `smart` object is not read: no major IdP puts
  it in access tokens that way (SMART's own sandbox nests `context` only inside its
  authorization codes and refresh tokens, which a resource server never sees).

References: a `fhirUser` or launch patient given as an absolute URL under this
server's base becomes relative (`Practitioner/9`, `123`), which is what the policy
understands. A launch patient that names a record elsewhere (another server's URL, a
reference to another type) is refused: the policy could only guess whose
compartment it means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwt import ClaimsOption

from fhirserver.auth.access import Access
from fhirserver.auth.claims import claims_refusal
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.scopes import parse_scopes

# Why a claim failed, said without repeating what the token claimed.
_CLAIM_REASONS = {
    "iss": "issued by another server",
    "aud": "meant for another audience",
    "nbf": "not valid yet",
    "iat": "issued in the future",
    "exp": "malformed claims",
}
MALFORMED = "malformed claims"


@dataclass(frozen=True)
class Expected:
    """What a token from the identity provider must say: its issuer ("" when only a
    key set is configured), this server's audience, the FHIR base URL that absolute
    references are read against, and the clock skew forgiven."""

    issuer: str
    audience: str
    base_url: str = ""
    leeway: timedelta = timedelta(seconds=30)


def check_claims(
    claims: Mapping[str, Any], expected: Expected, now: datetime, *, essential: bool
) -> None:
    """Raise `InvalidToken` unless the claims hold at `now`. With `essential`, `exp`,
    `aud` and (when an issuer is configured) `iss` must be present (a JWT); without,
    each is checked only when present (an introspection answer)."""
    options: dict[str, ClaimsOption] = {
        "exp": {"essential": essential},
        "aud": {"essential": essential, "value": expected.audience},
    }
    if expected.issuer:
        options["iss"] = {"essential": essential, "value": expected.issuer}
    reason = claims_refusal(
        claims,
        options,
        now=now,
        leeway=expected.leeway,
        reasons=_CLAIM_REASONS,
        missing="a required claim is missing",
    )
    if reason is not None:
        raise InvalidToken(reason)


def access_from_claims(claims: Mapping[str, Any], expected: Expected) -> Access:
    """The `Access` the claims grant; `InvalidToken` when one has the wrong shape."""
    return Access(
        client_id=_first_string(claims, "client_id", "azp", "cid"),
        scopes=parse_scopes(_scope_text(claims)),
        subject=_first_string(claims, "sub"),
        user=_relative(_first_string(claims, "fhirUser", "fhir_user"), expected.base_url),
        patient=_context_id(
            _first_string(claims, "patient", "launch_response_patient"),
            "Patient",
            expected.base_url,
        ),
        encounter=_context_id(
            _first_string(claims, "encounter", "launch_response_encounter"),
            "Encounter",
            expected.base_url,
        ),
        token_id=_first_string(claims, "jti"),
        expires_at=_expiry(claims.get("exp")),
    )


def _first_string(claims: Mapping[str, Any], *names: str) -> str | None:
    """The first of `names` the claims carry; it must be a non-empty string."""
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise InvalidToken(MALFORMED)
        return value
    return None


def _scope_text(claims: Mapping[str, Any]) -> str:
    scope = claims.get("scope")
    if scope is None:
        scope = claims.get("scp")
    if scope is None:
        return ""
    if isinstance(scope, str):
        return scope
    if isinstance(scope, list) and all(isinstance(item, str) and " " not in item for item in scope):
        return " ".join(scope)
    raise InvalidToken(MALFORMED)


def _relative(reference: str | None, base_url: str) -> str | None:
    """`reference` relative to this server when it is an absolute URL under
    `base_url`; otherwise as given (the policy reads only relative ones)."""
    if reference is None or not base_url:
        return reference
    prefix = base_url.rstrip("/") + "/"
    return reference[len(prefix) :] if reference.startswith(prefix) else reference


def _context_id(value: str | None, resource_type: str, base_url: str) -> str | None:
    """A launch context id: given plainly (SMART), or as `Type/id`, or as this
    server's URL of that record (both seen from IdPs that copy a reference)."""
    value = _relative(value, base_url)
    if value is None or "/" not in value:
        return value
    named_type, _, resource_id = value.partition("/")
    if named_type != resource_type or not resource_id or "/" in resource_id:
        raise InvalidToken("the launch context names a record on another server")
    return resource_id


def _expiry(exp: object) -> datetime | None:
    if exp is None:
        return None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken(MALFORMED)
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken(MALFORMED) from None
