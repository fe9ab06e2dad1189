"""SMART App Launch 2.2.0 client-confidential-asymmetric.html ("Authenticating to the
Token endpoint", "Signature Verification") over RFC 7523 section 3: the client
assertions of backend services, signed with RS384 or ES384."""

from __future__ import annotations

import base64
import json
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from fhirserver.auth.assertions import ClientAssertion, verify_client_assertion
from fhirserver.auth.errors import InvalidClient
from tests.clock import MovableClock

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
CLIENT = "bili_monitor"
TOKEN_URL = "https://fhir.example.org/auth/token"

Key = RSAKey | ECKey


class SeenJtis:
    """The store's replay check, in memory: records each jti with its expiry."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}

    async def __call__(self, jti: str, expires_at: datetime) -> bool:
        if jti in self.seen:
            return True
        self.seen[jti] = expires_at
        return False


@pytest.fixture(scope="module")
def rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="module")
def ec_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "ec-1"})


@pytest.fixture(scope="module")
def jwks(rsa_key: RSAKey, ec_key: ECKey) -> dict[str, Any]:
    """What the client registered: public keys only."""
    return {"keys": [rsa_key.as_dict(private=False), ec_key.as_dict(private=False)]}


@pytest.fixture(params=["RS384", "ES384"])
def signer(request: pytest.FixtureRequest, rsa_key: RSAKey, ec_key: ECKey) -> tuple[str, Key]:
    return request.param, rsa_key if request.param == "RS384" else ec_key


def claims(**changes: Any) -> dict[str, Any]:
    """The spec's worked example, at NOW."""
    base = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_URL,
        "exp": int((NOW + timedelta(minutes=4)).timestamp()),
        "jti": "random-non-reusable-jwt-id-123",
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def sign(key: Key, alg: str, body: dict[str, Any], **header: Any) -> str:
    return jwt.encode(
        {"alg": alg, "kid": key.kid, "typ": "JWT", **header}, body, key, algorithms=[alg]
    )


async def verify(
    assertion: str, jwks: dict[str, Any], seen: SeenJtis | None = None, client_id: str = CLIENT
) -> ClientAssertion:
    clock = MovableClock()
    clock.move_to(NOW)
    return await verify_client_assertion(
        assertion,
        client_id=client_id,
        jwks=jwks,
        token_url=TOKEN_URL,
        clock=clock,
        seen_before=seen or SeenJtis(),
    )


async def refused(assertion: str, jwks: dict[str, Any], **kwargs: Any) -> str:
    """The reason for refusing `assertion`, after checking it leaks nothing."""
    with pytest.raises(InvalidClient) as error:
        await verify(assertion, jwks, **kwargs)
    assert error.value.error == "invalid_client"
    message = str(error.value)
    assert assertion[:40] not in message or not assertion
    for key in jwks["keys"] if isinstance(jwks["keys"], list) else []:
        for member in ("n", "x", "y", "d"):
            if member in key:
                assert key[member][:16] not in message
    return error.value.reason


async def test_a_good_assertion_authenticates_the_client(
    signer: tuple[str, Key], jwks: dict[str, Any]
) -> None:
    alg, key = signer
    seen = SeenJtis()
    verified = await verify(sign(key, alg, claims()), jwks, seen)
    assert verified == ClientAssertion(CLIENT, claims()["jti"], NOW + timedelta(minutes=4))
    # The jti is remembered until the assertion expires.
    assert seen.seen == {claims()["jti"]: NOW + timedelta(minutes=4)}
    # aud may be a list that includes the token URL (RFC 7519 section 4.1.3).
    listed = sign(key, alg, claims(aud=["https://other.example", TOKEN_URL], jti="2"))
    assert (await verify(listed, jwks)).jti == "2"


async def test_a_replayed_jti_is_refused(signer: tuple[str, Key], jwks: dict[str, Any]) -> None:
    """SMART "Signature Verification": "check that the jti value has not been
    previously encountered for the given iss"."""
    alg, key = signer
    seen = SeenJtis()
    await verify(sign(key, alg, claims()), jwks, seen)
    again = sign(key, alg, claims(exp=int((NOW + timedelta(minutes=3)).timestamp())))
    assert await refused(again, jwks, seen=seen) == "jti already used"


async def test_nothing_unverified_uses_up_a_jti(
    signer: tuple[str, Key], jwks: dict[str, Any], rsa_key: RSAKey
) -> None:
    """Replay is asked last: a forged or expired assertion does not record its jti."""
    alg, key = signer
    seen = SeenJtis()
    forged = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    await refused(sign(forged, "RS384", claims()), jwks, seen=seen)
    await refused(sign(key, alg, claims(aud="https://elsewhere")), jwks, seen=seen)
    await refused(sign(key, alg, claims(exp=int(NOW.timestamp()) - 60)), jwks, seen=seen)
    assert seen.seen == {}


async def test_expired_and_too_long_lived_assertions_are_refused(
    signer: tuple[str, Key], jwks: dict[str, Any]
) -> None:
    """exp: "no more than five minutes in the future"; clock skew up to the leeway."""
    alg, key = signer
    now = int(NOW.timestamp())
    assert await refused(sign(key, alg, claims(exp=now - 60)), jwks) == "expired"
    assert await verify(sign(key, alg, claims(exp=now - 10)), jwks)
    assert await verify(sign(key, alg, claims(exp=now + 300)), jwks)
    too_far = "exp is more than five minutes away"
    assert await refused(sign(key, alg, claims(exp=now + 360)), jwks) == too_far
    assert await refused(sign(key, alg, claims(exp=now + 86400 * 365)), jwks) == too_far
    assert await refused(sign(key, alg, claims(exp=10**20)), jwks) == too_far
    assert await refused(sign(key, alg, claims(nbf=now + 120)), jwks) == "not valid yet"
    assert await refused(sign(key, alg, claims(iat=now + 120)), jwks) == "issued in the future"


async def test_an_assertion_signed_with_another_key_is_refused(
    signer: tuple[str, Key], jwks: dict[str, Any]
) -> None:
    alg, key = signer
    if alg == "RS384":
        stranger: Key = RSAKey.generate_key(2048, parameters={"kid": key.kid or ""})
    else:
        stranger = ECKey.generate_key("P-384", parameters={"kid": key.kid or ""})
    assert await refused(sign(stranger, alg, claims()), jwks) == "signature does not verify"
    unknown = sign(stranger, alg, claims(), kid="not-registered")
    assert await refused(unknown, jwks) == "no single registered key matches the kid and algorithm"


async def test_the_audience_must_be_this_token_endpoint(
    signer: tuple[str, Key], jwks: dict[str, Any]
) -> None:
    alg, key = signer
    for aud in ("https://fhir.example.org/auth/token/", "https://fhir.example.org/fhir", ""):
        wrong = sign(key, alg, claims(aud=aud))
        assert await refused(wrong, jwks) == "aud is not this token endpoint", aud


async def test_iss_and_sub_must_both_be_the_client(
    signer: tuple[str, Key], jwks: dict[str, Any]
) -> None:
    alg, key = signer
    assert await refused(sign(key, alg, claims(iss="someone-else")), jwks) == (
        "iss is not the client_id"
    )
    assert await refused(sign(key, alg, claims(sub="someone-else")), jwks) == (
        "sub is not the client_id"
    )
    # Another client's registered keys cannot vouch for this one.
    assert await refused(sign(key, alg, claims()), jwks, client_id="other-client") in (
        "iss is not the client_id",
        "sub is not the client_id",
    )


async def test_required_claims(signer: tuple[str, Key], jwks: dict[str, Any]) -> None:
    alg, key = signer
    missing = "a required claim (iss, sub, aud, exp, jti) is missing"
    for name in ("iss", "sub", "aud", "exp", "jti"):
        assert await refused(sign(key, alg, claims(**{name: None})), jwks) == missing, name
    assert await refused(sign(key, alg, claims(jti="")), jwks) == "jti is not a non-empty string"
    assert await refused(sign(key, alg, claims(jti="j" * 256)), jwks) == "jti is too long"


async def test_only_rs384_and_es384_signatures_are_accepted(
    rsa_key: RSAKey, jwks: dict[str, Any]
) -> None:
    """alg none, an HMAC keyed with the client's public key (algorithm confusion),
    and algorithms SMART does not name are refused before any key is used."""
    only_algs = "client assertion must be signed with RS384 or ES384"
    segments = [{"alg": "none", "kid": "rsa-1", "typ": "JWT"}, claims()]
    unsigned = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in segments
    )
    assert await refused(unsigned + ".", jwks) == only_algs
    secret = OctKey.import_key(json.dumps(jwks["keys"][0]).encode())
    confused = jwt.encode(
        {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, claims(), secret, algorithms=["HS256"]
    )
    assert await refused(confused, jwks) == only_algs
    assert await refused(sign(rsa_key, "RS256", claims()), jwks) == only_algs
    assert await refused(sign(rsa_key, "PS384", claims()), jwks) == only_algs
    p256 = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
    assert await refused(sign(p256, "ES256", claims()), jwks) == only_algs


async def test_the_key_type_must_fit_the_algorithm(rsa_key: RSAKey, jwks: dict[str, Any]) -> None:
    """SMART "Signature Verification" step 3: kid and kty consistent with alg; exactly one."""
    # An ES384 header naming the RSA key's kid finds no EC key of that kid.
    ec_named_like_rsa = ECKey.generate_key("P-384", parameters={"kid": "rsa-1"})
    mismatched = sign(ec_named_like_rsa, "ES384", claims())
    assert await refused(mismatched, jwks) == (
        "no single registered key matches the kid and algorithm"
    )
    rsa_named_like_ec = RSAKey.generate_key(2048, parameters={"kid": "ec-1"})
    assert await refused(sign(rsa_named_like_ec, "RS384", claims()), jwks) == (
        "no single registered key matches the kid and algorithm"
    )
    # Two keys may share a kid across types: the algorithm tells which one is meant.
    shared = {"keys": [*jwks["keys"], {**rsa_named_like_ec.as_dict(private=False)}]}
    assert await verify(sign(rsa_named_like_ec, "RS384", claims()), shared)
    twice = {"keys": [*jwks["keys"], jwks["keys"][0]]}
    assert await refused(sign(rsa_key, "RS384", claims()), twice) == (
        "no single registered key matches the kid and algorithm"
    )
    encryption_only = {"keys": [{**jwks["keys"][0], "use": "enc"}]}
    assert await refused(sign(rsa_key, "RS384", claims()), encryption_only) == (
        "no single registered key matches the kid and algorithm"
    )
    assert await refused(sign(rsa_key, "RS384", claims()), {"keys": "nope"}) == (
        "no single registered key matches the kid and algorithm"
    )
    p256 = ECKey.generate_key("P-256", parameters={"kid": "p256"})
    registered = {"keys": [p256.as_dict(private=False)]}
    forced = jwt.encode(
        {"alg": "ES384", "kid": "p256", "typ": "JWT"},
        claims(),
        ECKey.generate_key("P-384", parameters={"kid": "p256"}),
        algorithms=["ES384"],
    )
    assert await refused(forced, registered) == (
        "no single registered key matches the kid and algorithm"
    )


async def test_weak_rsa_keys_are_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weak = RSAKey.generate_key(1024, parameters={"kid": "weak"})
    registered = {"keys": [weak.as_dict(private=False)]}
    assert await refused(sign(weak, "RS384", claims()), registered) == (
        "the registered RSA key is shorter than 2048 bits"
    )


async def test_header_rules(rsa_key: RSAKey, jwks: dict[str, Any]) -> None:
    """kid required; typ JWT; a jku that was not registered fails verification."""
    no_kid = jwt.encode({"alg": "RS384", "typ": "JWT"}, claims(), rsa_key, algorithms=["RS384"])
    assert await refused(no_kid, jwks) == "client assertion header has no kid"
    wrong_typ = sign(rsa_key, "RS384", claims(), typ="at+jwt")
    assert await refused(wrong_typ, jwks) == "client assertion typ is not JWT"
    with_jku = sign(rsa_key, "RS384", claims(), jku="https://attacker.example/jwks.json")
    assert await refused(with_jku, jwks) == "jku is not registered for this client"
    for junk in ("", "a.b", "a.b.c", "x" * 10000):
        assert await refused(junk, jwks) == "malformed client assertion"
