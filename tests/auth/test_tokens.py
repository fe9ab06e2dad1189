"""Access tokens as signed JWTs (RFC 9068 shape; RFC 7519 section 4.1; RFC 6750
section 3.1 `invalid_token`) and id_tokens (OpenID Connect Core section 2; SMART App
Launch 2.2.0 "Scopes for requesting identity data": `fhirUser`)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey

from fhirserver.auth.access import Access
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.keys import SigningKeys, new_signing_keys, public_jwks, rotate
from fhirserver.auth.scopes import parse_scopes
from fhirserver.auth.tokens import (
    TokenSettings,
    mint_access_token,
    mint_id_token,
    validate_access_token,
)
from tests.clock import MovableClock

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BASE = "https://fhir.example.org/fhir"
SETTINGS = TokenSettings(issuer="https://fhir.example.org/auth", audience=BASE)
APP = Access(
    client_id="growth-chart",
    scopes=parse_scopes("patient/Observation.rs launch/patient openid fhirUser"),
    subject="alice",
    user="Practitioner/9",
    patient="123",
    encounter="456",
)


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return new_signing_keys(at(T0))


@pytest.fixture(scope="module")
def other_keys() -> SigningKeys:
    return new_signing_keys(at(T0))


def at(moment: datetime) -> MovableClock:
    clock = MovableClock()
    clock.move_to(moment)
    return clock


def refused(token: str, keys: SigningKeys, moment: datetime = T0, **settings: Any) -> str:
    """The reason validation gives for refusing `token`."""
    chosen = TokenSettings(**{**SETTINGS.__dict__, **settings})
    with pytest.raises(InvalidToken) as error:
        validate_access_token(token, keys, chosen, at(moment))
    return error.value.reason


def forge(keys: SigningKeys, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the server's own key, with whatever claims a test needs."""
    full = {"alg": "RS256", "typ": "at+jwt", "kid": keys.current.kid, **header}
    return jwt.encode(full, claims, keys.current.key, algorithms=["RS256"])


def good_claims(**changes: Any) -> dict[str, Any]:
    now = int(T0.timestamp())
    claims = {
        "iss": SETTINGS.issuer,
        "aud": BASE,
        "sub": "alice",
        "client_id": "app",
        "scope": "patient/*.rs",
        "iat": now,
        "exp": now + 300,
        "jti": "j1",
    }
    return {k: v for k, v in {**claims, **changes}.items() if v is not None}


def test_a_minted_token_validates_to_the_same_access(keys: SigningKeys) -> None:
    issued = mint_access_token(APP, keys, SETTINGS, at(T0))
    assert issued.access.token_id and issued.access.expires_at == T0 + SETTINGS.lifetime
    assert validate_access_token(issued.value, keys, SETTINGS, at(T0)) == issued.access
    assert issued.access.patient == "123" and issued.access.user == "Practitioner/9"
    assert issued.value not in repr(issued)
    claims = jwt.decode(issued.value, keys.current.key).claims
    assert claims["aud"] == BASE and claims["iss"] == SETTINGS.issuer
    assert claims["client_id"] == "growth-chart" and claims["sub"] == "alice"
    assert claims["scope"] == "patient/Observation.rs openid fhirUser launch/patient"
    assert claims["fhirUser"] == "Practitioner/9" and claims["encounter"] == "456"
    assert set(claims) >= {"iat", "exp", "jti"}
    assert mint_access_token(APP, keys, SETTINGS, at(T0)).access.token_id != (
        issued.access.token_id
    )


def test_a_backend_service_token_has_the_client_as_subject(keys: SigningKeys) -> None:
    backend = Access(client_id="bulk-exporter", scopes=parse_scopes("system/*.rs"))
    issued = mint_access_token(backend, keys, SETTINGS, at(T0))
    access = validate_access_token(issued.value, keys, SETTINGS, at(T0))
    assert access.subject == "bulk-exporter" and access.patient is None and access.user is None


def test_a_token_needs_a_client_and_a_scope(keys: SigningKeys) -> None:
    with pytest.raises(ValueError):
        mint_access_token(Access(client_id=None, scopes=APP.scopes), keys, SETTINGS, at(T0))
    with pytest.raises(ValueError):
        mint_access_token(Access("app", parse_scopes("bogus")), keys, SETTINGS, at(T0))


def test_an_expired_token_is_refused_after_a_small_leeway(keys: SigningKeys) -> None:
    issued = mint_access_token(APP, keys, SETTINGS, at(T0))
    expiry = T0 + SETTINGS.lifetime
    assert validate_access_token(issued.value, keys, SETTINGS, at(expiry + timedelta(seconds=29)))
    assert refused(issued.value, keys, expiry + SETTINGS.leeway) == "expired"
    assert refused(issued.value, keys, expiry + timedelta(hours=5)) == "expired"


def test_a_token_for_another_audience_or_from_another_issuer_is_refused(
    keys: SigningKeys,
) -> None:
    issued = mint_access_token(APP, keys, SETTINGS, at(T0))
    assert refused(issued.value, keys, audience="https://other.example/fhir") == (
        "meant for another audience"
    )
    assert refused(issued.value, keys, issuer="https://other.example/auth") == (
        "issued by another server"
    )


def test_a_token_signed_by_an_unknown_key_is_refused(
    keys: SigningKeys, other_keys: SigningKeys
) -> None:
    """Another server's token (another key set), whatever its claims say."""
    foreign = mint_access_token(APP, other_keys, SETTINGS, at(T0))
    assert refused(foreign.value, keys) == "signed by an unknown key"
    # Naming our kid does not help: the signature is checked with our key.
    relabelled = forge(other_keys, good_claims(), kid=keys.current.kid)
    assert refused(relabelled, keys) == "bad signature"


def test_a_tampered_token_is_refused(keys: SigningKeys) -> None:
    token = mint_access_token(APP, keys, SETTINGS, at(T0)).value
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert refused(f"{header}.{payload}.{flipped}", keys) == "bad signature"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["patient"] = "456"  # someone else's record
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    assert refused(f"{header}.{forged}.{signature}", keys) == "bad signature"
    for junk in ("", "abc", "a.b.c", "a.b", token + ".x", "x" * 20000):
        assert refused(junk, keys) == "malformed"


def test_a_rotated_out_key_verifies_during_its_grace_period_only(keys: SigningKeys) -> None:
    """After rotation the old key verifies for `grace`; then its tokens are refused
    even if they have not expired."""
    long_lived = TokenSettings(SETTINGS.issuer, BASE, lifetime=timedelta(hours=3))
    token = mint_access_token(APP, keys, long_lived, at(T0)).value
    rotated = rotate(keys, at(T0 + timedelta(minutes=1)))
    within = T0 + timedelta(minutes=1) + rotated.grace - timedelta(seconds=1)
    assert validate_access_token(token, rotated, long_lived, at(within)).patient == "123"
    after = T0 + timedelta(minutes=1) + rotated.grace
    assert refused(token, rotated, after, lifetime=long_lived.lifetime) == (
        "signed by an unknown key"
    )
    # New tokens are signed with the new key.
    fresh = mint_access_token(APP, rotated, SETTINGS, at(after)).value
    assert validate_access_token(fresh, rotated, SETTINGS, at(after))


def test_claims_are_checked(keys: SigningKeys) -> None:
    """RFC 9068 section 4: every required claim is present; nbf and iat are not in
    the future; context claims are strings."""
    for missing in ("sub", "client_id", "scope", "jti", "exp", "iat", "iss", "aud"):
        token = forge(keys, good_claims(**{missing: None}))
        assert refused(token, keys) == "a required claim is missing", missing
    later = int((T0 + timedelta(minutes=5)).timestamp())
    assert refused(forge(keys, good_claims(nbf=later)), keys) == "not valid yet"
    assert refused(forge(keys, good_claims(iat=later)), keys) == "issued in the future"
    assert refused(forge(keys, good_claims(patient=123)), keys) == "malformed claims"
    assert refused(forge(keys, good_claims(exp="tomorrow")), keys) == "malformed claims"
    assert validate_access_token(forge(keys, good_claims()), keys, SETTINGS, at(T0))


def test_only_rs256_access_tokens_are_accepted(keys: SigningKeys) -> None:
    """alg "none", an HMAC keyed with the public key (algorithm confusion), and an
    id_token (typ JWT) are all refused before any claim is read."""
    public = keys.current.key.as_dict(private=False)
    unsigned = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
        .decode()
        .rstrip("=")
        + "."
        + base64.urlsafe_b64encode(json.dumps(good_claims()).encode()).decode().rstrip("=")
        + "."
    )
    assert refused(unsigned, keys) == "not signed the way this server signs"
    hmac_key = OctKey.import_key(json.dumps(public).encode())
    confused = jwt.encode(
        {"alg": "HS256", "typ": "at+jwt", "kid": keys.current.kid},
        good_claims(),
        hmac_key,
        algorithms=["HS256"],
    )
    assert refused(confused, keys) == "not signed the way this server signs"
    id_token = mint_id_token(keys, SETTINGS, at(T0), subject="alice", client_id=BASE)
    assert refused(id_token, keys) == "not an access token"


def test_invalid_token_is_a_401_with_the_rfc6750_challenge(keys: SigningKeys) -> None:
    token = mint_access_token(APP, keys, SETTINGS, at(T0)).value
    with pytest.raises(InvalidToken) as error:
        validate_access_token(token, keys, SETTINGS, at(T0 + timedelta(days=1)))
    assert error.value.status == 401 and error.value.error == "invalid_token"
    assert error.value.headers["WWW-Authenticate"] == (
        'Bearer error="invalid_token", error_description="expired"'
    )
    assert token not in str(error.value) and token not in repr(error.value)


def test_an_id_token_carries_the_openid_claims_and_verifies_with_the_jwks(
    keys: SigningKeys,
) -> None:
    """OpenID Connect Core 2 and 3.1.3.7: aud is the client, nonce echoed, RS256;
    SMART: `fhirUser`. A client verifies it with the published JWKS."""
    token = mint_id_token(
        keys,
        SETTINGS,
        at(T0),
        subject="alice",
        client_id="growth-chart",
        fhir_user="Practitioner/9",
        nonce="n-0S6_WzA2Mj",
    )
    jwks = KeySet.import_key_set(public_jwks(keys, at(T0)))  # type: ignore[arg-type]
    decoded = jwt.decode(token, jwks, algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"] == keys.current.kid
    now = int(T0.timestamp())
    assert decoded.claims == {
        "iss": SETTINGS.issuer,
        "sub": "alice",
        "aud": "growth-chart",
        "iat": now,
        "exp": now + int(SETTINGS.lifetime.total_seconds()),
        "nonce": "n-0S6_WzA2Mj",
        "fhirUser": "Practitioner/9",
    }
    bare = jwt.decode(
        mint_id_token(keys, SETTINGS, at(T0), subject="bob", client_id="c"), jwks
    ).claims
    assert "nonce" not in bare and "fhirUser" not in bare
