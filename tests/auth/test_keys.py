"""The server's signing keys: RS256 (SMART App Launch 2.2.0 "Signed ID Token: RSA
SHA-256"), `kid` as the RFC 7638 thumbprint, rotation with a grace period, export
and import of the private set, and a public JWKS (RFC 7517 section 5) without a
private part."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey, thumbprint

from fhirserver.auth.keys import (
    SigningKeys,
    export_private_keys,
    import_private_keys,
    new_signing_keys,
    public_jwks,
    rotate,
    verification_keys,
)
from tests.clock import MovableClock

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module")
def rotated() -> tuple[SigningKeys, SigningKeys]:
    """A key set made at T0 and the same set rotated ten minutes later."""
    clock = MovableClock()
    clock.move_to(T0)
    first = new_signing_keys(clock, GRACE)
    clock.move_to(T0 + timedelta(minutes=10))
    return first, rotate(first, clock)


def at(moment: datetime) -> MovableClock:
    clock = MovableClock()
    clock.move_to(moment)
    return clock


def test_every_key_has_its_thumbprint_as_kid_and_signs_rs256(
    rotated: tuple[SigningKeys, SigningKeys],
) -> None:
    first, _ = rotated
    key = first.current.key
    public = key.as_dict(private=False)
    # RFC 7638 section 3.2: the hash of the required members only.
    assert first.current.kid == thumbprint({m: public[m] for m in ("e", "kty", "n")})
    assert key.alg == "RS256" and key.get("use") == "sig"
    assert first.current.created_at == T0 and first.current.retired_at is None


def test_the_published_jwks_has_no_private_part(
    rotated: tuple[SigningKeys, SigningKeys],
) -> None:
    _, second = rotated
    document = public_jwks(second, at(T0 + timedelta(minutes=20)))
    assert [k["kid"] for k in document["keys"]] == [second.current.kid, second.previous[0].kid]
    for key in document["keys"]:
        assert not PRIVATE_MEMBERS & set(key), key
        assert {"kty", "kid", "n", "e", "alg", "use"} <= set(key)
        assert key["kty"] == "RSA" and key["alg"] == "RS256"
    # A client turns it into a key set and verifies with it.
    assert len(KeySet.import_key_set(json.loads(json.dumps(document))).keys) == 2


def test_rotation_keeps_the_old_key_verifying_for_the_grace_period(
    rotated: tuple[SigningKeys, SigningKeys],
) -> None:
    first, second = rotated
    old = first.current.kid
    assert second.current.kid != old
    assert [k.kid for k in second.previous] == [old]
    assert second.previous[0].retired_at == T0 + timedelta(minutes=10)
    within = T0 + timedelta(minutes=10) + GRACE - timedelta(seconds=1)
    assert set(verification_keys(second, at(within))) == {second.current.kid, old}
    after = T0 + timedelta(minutes=10) + GRACE
    assert set(verification_keys(second, at(after))) == {second.current.kid}
    assert [k["kid"] for k in public_jwks(second, at(after))["keys"]] == [second.current.kid]
    # The next rotation drops keys whose grace has ended.
    third = rotate(second, at(after))
    assert [k.kid for k in third.previous] == [second.current.kid]


def test_verification_keys_are_public(rotated: tuple[SigningKeys, SigningKeys]) -> None:
    _, second = rotated
    for key in verification_keys(second, at(T0 + timedelta(minutes=20))).values():
        assert not key.is_private


def test_the_private_set_exports_and_imports_whole(
    rotated: tuple[SigningKeys, SigningKeys],
) -> None:
    _, second = rotated
    restored = import_private_keys(export_private_keys(second))
    assert restored.grace == second.grace
    assert restored.current.kid == second.current.kid
    assert [k.kid for k in restored.previous] == [k.kid for k in second.previous]
    assert restored.previous[0].retired_at == second.previous[0].retired_at
    assert restored.current.created_at == second.current.created_at
    # The imported private key signs what the original public key verifies.
    token = jwt.encode({"alg": "RS256"}, {"x": 1}, restored.current.key, algorithms=["RS256"])
    public = RSAKey.import_key(second.current.key.as_dict(private=False))
    assert jwt.decode(token, public, algorithms=["RS256"]).claims == {"x": 1}


def test_a_broken_export_is_refused_without_quoting_key_material(
    rotated: tuple[SigningKeys, SigningKeys],
) -> None:
    _, second = rotated
    exported = json.loads(export_private_keys(second))
    secret = exported["keys"][0]["jwk"]["d"]
    two_current = {**exported, "keys": [{**k, "retired_at": None} for k in exported["keys"]]}
    public_only = {
        **exported,
        "keys": [
            {**k, "jwk": {m: v for m, v in k["jwk"].items() if m not in PRIVATE_MEMBERS}}
            for k in exported["keys"]
        ],
    }
    naive = {**exported, "keys": [{**exported["keys"][0], "created_at": "2030-01-01T00:00:00"}]}
    for broken in ("not json", json.dumps(two_current), json.dumps(public_only), json.dumps(naive)):
        with pytest.raises(ValueError) as refused:
            import_private_keys(broken)
        assert secret not in str(refused.value)


def test_reprs_never_show_private_keys(rotated: tuple[SigningKeys, SigningKeys]) -> None:
    _, second = rotated
    private = second.current.key.as_dict(private=True)
    text = repr(second)
    for member in ("d", "p", "q"):
        assert str(private[member]) not in text
