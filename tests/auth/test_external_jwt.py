"""External mode, JWT access tokens from an identity provider served on a loopback
port: OpenID Connect Discovery 1.0 section 4 (the issuer's document), RFC 7517 (its
key set) and OpenID Connect Core section 10.1.1 (key rotation: an unknown `kid` sends
the verifier back to `jwks_uri`), RFC 7519 section 4.1 / RFC 9068 section 4 (the
claims checked), RFC 8725 section 3.1 (no `none`, no HS*), SMART App Launch 2.2
"Launch context arrives with your access_token" and `fhirUser` (the claims read)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external import ExternalAuthenticator, external_authenticator
from fhirserver.auth.scopes import Context, Interaction
from fhirserver.config import Settings
from tests.auth.external_idp import (
    AUDIENCE,
    T0,
    FakeIdP,
    clock,
    ec_key,
    http,
    idp,
    rsa_key,
)
from tests.clock import MovableClock

__all__ = ["clock", "http", "idp"]


@pytest.fixture
async def authenticate(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> ExternalAuthenticator:
    settings = Settings(auth="external", auth_issuer=idp.url)
    return await external_authenticator(settings, http, clock, AUDIENCE)


def claims(idp: FakeIdP, **changes: Any) -> dict[str, Any]:
    """What a SMART-aware IdP puts in an access token for a patient-launched app."""
    now = int(T0.timestamp())
    base = {
        "iss": idp.url,
        "aud": AUDIENCE,
        "sub": "alice",
        "client_id": "growth-chart",
        "scope": "launch/patient openid fhirUser patient/Observation.rs",
        "patient": "123",
        "fhirUser": "Practitioner/9",
        "iat": now,
        "exp": now + 300,
        "jti": "token-1",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


async def refused(authenticate: ExternalAuthenticator, token: str) -> str:
    with pytest.raises(InvalidToken) as error:
        await authenticate(token)
    return error.value.reason


async def test_a_good_token_grants_its_scopes_launch_patient_and_user(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    access = await authenticate(idp.mint(claims(idp)))
    assert access.client_id == "growth-chart"
    assert access.subject == "alice"
    assert access.patient == "123"
    assert access.user == "Practitioner/9"
    assert access.token_id == "token-1"
    assert access.expires_at == T0 + timedelta(seconds=300)
    assert access.scopes.launch_patient
    [observations] = access.scopes.permissions
    assert observations.context is Context.PATIENT
    assert observations.resource_type == "Observation"
    assert observations.interactions == {Interaction.READ, Interaction.SEARCH}


async def test_an_expired_token_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    token = idp.mint(claims(idp))
    clock.move_to(T0 + timedelta(seconds=300 + 31))  # past the 30 s leeway
    assert await refused(authenticate, token) == "expired"


async def test_a_little_clock_skew_is_forgiven(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    token = idp.mint(claims(idp, iat=int(T0.timestamp()) + 20, nbf=int(T0.timestamp()) + 20))
    assert (await authenticate(token)).subject == "alice"
    clock.move_to(T0 + timedelta(seconds=300 + 20))
    assert (await authenticate(token)).subject == "alice"


async def test_a_token_not_valid_yet_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    later = int(T0.timestamp()) + 120
    assert await refused(authenticate, idp.mint(claims(idp, nbf=later))) == "not valid yet"
    assert await refused(authenticate, idp.mint(claims(idp, iat=later))) == "issued in the future"


async def test_a_token_from_another_issuer_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = idp.mint(claims(idp, iss="https://evil.example.com"))
    assert await refused(authenticate, token) == "issued by another server"
    assert await refused(authenticate, idp.mint(claims(idp, iss=None))) == (
        "a required claim is missing"
    )


async def test_a_token_for_another_audience_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    other = idp.mint(claims(idp, aud="https://other.example.org/fhir"))
    assert await refused(authenticate, other) == "meant for another audience"
    assert await refused(authenticate, idp.mint(claims(idp, aud=None))) == (
        "a required claim is missing"
    )
    # RFC 7519 section 4.1.3: one of several audiences is enough.
    several = idp.mint(claims(idp, aud=["account", AUDIENCE]))
    assert (await authenticate(several)).subject == "alice"


async def test_a_token_without_expiry_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    assert await refused(authenticate, idp.mint(claims(idp, exp=None))) == (
        "a required claim is missing"
    )


async def test_a_token_signed_by_a_key_the_idp_does_not_publish_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    stranger = rsa_key("stranger")
    assert await refused(authenticate, idp.mint(claims(idp), key=stranger)) == (
        "signed by an unknown key"
    )
    # The IdP's kid on a stranger's signature.
    forged = idp.mint(claims(idp), key=stranger, kid="key-1")
    assert await refused(authenticate, forged) == "bad signature"


async def test_an_altered_token_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    header, _, signature = idp.mint(claims(idp)).split(".")
    other_payload = idp.mint(claims(idp, patient="456")).split(".")[1]
    assert await refused(authenticate, f"{header}.{other_payload}.{signature}") == ("bad signature")


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A JWT put together by hand, as an attacker would (a library refuses to)."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    mac = b"" if secret is None else hmac.digest(secret, signing_input.encode(), "sha256")
    return f"{signing_input}.{part(mac)}"


async def test_alg_none_is_refused(idp: FakeIdP, authenticate: ExternalAuthenticator) -> None:
    unsigned = hand_made({"alg": "none", "kid": "key-1"}, claims(idp), None)
    assert await refused(authenticate, unsigned) == "not signed with an accepted algorithm"


async def test_hs256_with_the_idps_public_key_as_secret_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    """The classic confusion: an HMAC "signed" with the public key everyone can fetch."""
    public_pem = idp.keys[0].as_pem(private=False)
    forged = hand_made({"alg": "HS256", "kid": "key-1"}, claims(idp), public_pem)
    assert await refused(authenticate, forged) == "not signed with an accepted algorithm"


async def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    # The header says ES256 but names the IdP's RSA key.
    elliptic = ec_key("key-1")
    assert await refused(authenticate, idp.mint(claims(idp), key=elliptic, alg="ES256")) == (
        "malformed"
    )


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("RS384", lambda: rsa_key("rsa")),
        ("PS256", lambda: rsa_key("rsa")),
        ("ES256", lambda: ec_key("ec256", "P-256")),
        ("ES384", lambda: ec_key("ec384", "P-384")),
    ],
)
async def test_each_accepted_algorithm_verifies(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock, alg: str, make_key: Any
) -> None:
    key = make_key()
    idp.keys.append(key)
    settings = Settings(auth="external", auth_issuer=idp.url)
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    assert (await authenticate(idp.mint(claims(idp), key=key, alg=alg))).subject == "alice"


async def test_a_key_rotation_at_the_idp_is_picked_up_with_one_fetch(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    await authenticate(idp.mint(claims(idp)))
    assert idp.requests["jwks"] == 1
    clock.move_to(T0 + timedelta(seconds=40))
    rotated = rsa_key("key-2")
    idp.keys = [rotated]
    access = await authenticate(idp.mint(claims(idp), key=rotated))
    assert access.subject == "alice"
    assert idp.requests["jwks"] == 2
    # Known from now on: no more fetches.
    await authenticate(idp.mint(claims(idp, jti="token-2"), key=rotated))
    assert idp.requests["jwks"] == 2


async def test_a_flood_of_made_up_kids_fetches_the_key_set_at_most_every_30_seconds(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    stranger = rsa_key("stranger")
    clock.move_to(T0 + timedelta(seconds=1))

    async def flood() -> None:
        for _ in range(25):
            token = idp.mint(claims(idp), key=stranger, kid=secrets.token_hex(8))
            assert await refused(authenticate, token) == "signed by an unknown key"

    await flood()
    # The start-up fetch was under 30 s ago, so none of these fetched again.
    assert idp.requests["jwks"] == 1
    clock.move_to(T0 + timedelta(seconds=31))
    await flood()
    assert idp.requests["jwks"] == 2
    clock.move_to(T0 + timedelta(seconds=55))
    await flood()
    assert idp.requests["jwks"] == 2
    clock.move_to(T0 + timedelta(seconds=62))
    await flood()
    assert idp.requests["jwks"] == 3


async def test_concurrent_unknown_kids_fetch_once(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    clock.move_to(T0 + timedelta(seconds=31))
    stranger = rsa_key("stranger")
    tokens = [idp.mint(claims(idp), key=stranger, kid=f"made-up-{n}") for n in range(20)]
    results = await asyncio.gather(*(authenticate(t) for t in tokens), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    assert idp.requests["jwks"] == 2


async def test_the_key_set_is_kept_for_its_max_age(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    idp.cache_control = "public, max-age=600"
    settings = Settings(auth="external", auth_issuer=idp.url)
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    clock.move_to(T0 + timedelta(seconds=599))
    await authenticate(idp.mint(claims(idp, exp=int(T0.timestamp()) + 900)))
    assert idp.requests["jwks"] == 1
    clock.move_to(T0 + timedelta(seconds=601))
    await authenticate(idp.mint(claims(idp, exp=int(T0.timestamp()) + 900)))
    assert idp.requests["jwks"] == 2


async def test_a_no_store_key_set_is_still_kept_a_minute(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    idp.cache_control = "no-store"
    settings = Settings(auth="external", auth_issuer=idp.url)
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    for second in (1, 30, 59):
        clock.move_to(T0 + timedelta(seconds=second))
        await authenticate(idp.mint(claims(idp)))
    assert idp.requests["jwks"] == 1
    clock.move_to(T0 + timedelta(seconds=61))
    await authenticate(idp.mint(claims(idp)))
    assert idp.requests["jwks"] == 2


async def test_okta_shaped_claims_scp_list_cid_and_launch_response_patient(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    okta = claims(
        idp,
        scope=None,
        client_id=None,
        patient=None,
        fhirUser=None,
        scp=["launch/patient", "patient/Observation.rs", "fhirUser"],
        cid="0oa1growthchart",
        launch_response_patient="123",
    )
    access = await authenticate(idp.mint(okta))
    assert access.client_id == "0oa1growthchart"
    assert access.patient == "123"
    assert access.user is None
    assert [str(p) for p in access.scopes.permissions] == ["patient/Observation.rs"]


async def test_scp_as_one_string_and_azp_as_the_client(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = idp.mint(claims(idp, scope=None, client_id=None, scp="system/*.rs", azp="exporter"))
    access = await authenticate(token)
    assert access.client_id == "exporter"
    assert [str(p) for p in access.scopes.permissions] == ["system/*.rs"]


async def test_absolute_references_under_this_server_become_relative(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = idp.mint(
        claims(
            idp,
            patient=None,
            fhirUser=f"{AUDIENCE}/Practitioner/9",
            launch_response_patient=f"{AUDIENCE}/Patient/123",
        )
    )
    access = await authenticate(token)
    assert access.user == "Practitioner/9"
    assert access.patient == "123"


async def test_a_launch_patient_on_another_server_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = idp.mint(claims(idp, patient="https://other.example.org/fhir/Patient/123"))
    assert await refused(authenticate, token) == (
        "the launch context names a record on another server"
    )
    token = idp.mint(claims(idp, patient="Group/7"))
    assert await refused(authenticate, token) == (
        "the launch context names a record on another server"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"scope": 5},
        {"scope": ["patient/*.rs launch"]},
        {"scp": [1, 2], "scope": None},
        {"patient": 123},
        {"fhirUser": {"reference": "Practitioner/9"}},
        {"client_id": ""},
    ],
)
async def test_claims_of_the_wrong_shape_are_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator, changes: dict[str, Any]
) -> None:
    assert await refused(authenticate, idp.mint(claims(idp, **changes))) == "malformed claims"


@pytest.mark.parametrize(
    "token",
    ["", "a.b.c", "not a token", "x" * (16 * 1024 + 1), "eyJhbGciOiJSUzI1NiJ9.e30.!!"],
)
async def test_malformed_tokens_are_refused_without_asking_the_idp(
    idp: FakeIdP, authenticate: ExternalAuthenticator, token: str
) -> None:
    asked = sum(idp.requests.values())
    assert await refused(authenticate, token) == "malformed"
    assert sum(idp.requests.values()) == asked


async def test_refusals_never_repeat_the_token(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = idp.mint(claims(idp, iss="https://evil.example.com"))
    with pytest.raises(InvalidToken) as error:
        await authenticate(token)
    assert token not in str(error.value)
    assert token not in error.value.headers["WWW-Authenticate"]


async def test_a_key_published_for_another_algorithm_does_not_verify_this_one(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    """RFC 7517 section 4.4: a key's `alg` names the one algorithm it is for."""
    rs384_only = RSAKey.generate_key(2048, parameters={"kid": "rs384", "alg": "RS384"})
    idp.keys.append(rs384_only)
    settings = Settings(auth="external", auth_issuer=idp.url)
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    same_key_any_alg = RSAKey.import_key(
        {k: v for k, v in rs384_only.as_dict(private=True).items() if k != "alg"}
    )
    token = idp.mint(claims(idp), key=same_key_any_alg, alg="RS256", kid="rs384")
    assert await refused(authenticate, token) == "not signed with an accepted algorithm"
    assert (await authenticate(idp.mint(claims(idp), key=rs384_only, alg="RS384"))).subject
