"""Issue 16 "passwords stored with a memory-hard hash (scrypt or argon2), and
constant-time comparisons"; RFC 7914 (scrypt); client secrets stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from fhirserver.auth import passwords
from fhirserver.auth.passwords import (
    DEFAULT,
    ScryptParameters,
    hash_client_secret,
    hash_password,
    needs_rehash,
    new_client_secret,
    verify_client_secret,
    verify_password,
)

CHEAP = ScryptParameters(log2_n=10, r=8, p=1)


def test_the_right_password_verifies_and_a_wrong_one_does_not() -> None:
    stored = hash_password("correct horse battery staple")
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapler", stored)
    assert not verify_password("Correct horse battery staple", stored)
    assert not verify_password("", stored)


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second
    assert first.split("$")[3] != second.split("$")[3]
    assert verify_password("same password", first) and verify_password("same password", second)
    assert "same password" not in first


def test_the_stored_form_names_its_parameters_so_they_can_change() -> None:
    stored = hash_password("pw")
    assert stored.startswith("$scrypt$ln=15,r=8,p=1$")
    assert DEFAULT.log2_n >= 14 and DEFAULT.r >= 8 and DEFAULT.p >= 1
    assert not needs_rehash(stored)
    older = hash_password("pw", CHEAP)
    assert older.startswith("$scrypt$ln=10,r=8,p=1$")
    assert verify_password("pw", older)
    assert needs_rehash(older)
    assert needs_rehash("not a hash")


def test_the_same_password_typed_composed_or_decomposed_verifies() -> None:
    """RFC 8265 OpaqueString: NFC before hashing."""
    stored = hash_password("caf\u00e9", CHEAP)
    assert verify_password("cafe\u0301", stored)


def test_unreadable_or_hostile_stored_hashes_never_match() -> None:
    good = hash_password("pw", CHEAP)
    prefix, salt, digest = good.rsplit("$", 2)
    flipped = digest[:-2] + ("A" if digest[-2] != "A" else "B") + digest[-1]
    for stored in (
        None,
        "",
        "pw",
        f"{prefix}${salt}${flipped}",
        f"{prefix}${salt}${digest[:20]}",  # a truncated hash is not a shorter match
        f"{prefix}${salt[:8]}${digest}",
        good.replace("ln=10", "ln=22"),  # 4 GiB: refused before any allocation
        good.replace("p=1", "p=9"),
        good.replace("ln=10", "ln=0"),
        f"{prefix}${salt}${digest}!",
    ):
        assert not verify_password("pw", stored), stored


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Digests are compared with hmac.compare_digest, never with ==."""
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append(a)
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    assert verify_password("pw", hash_password("pw", CHEAP))
    assert verify_client_secret("s", hash_client_secret("s"))
    assert len(compared) == 2


def test_an_unknown_user_costs_the_same_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login for a user that does not exist still runs scrypt with the default
    parameters, so its timing does not tell which usernames exist."""
    costs: list[int] = []
    real = hashlib.scrypt

    def spy(password: bytes, **kwargs: Any) -> bytes:
        costs.append(kwargs["n"])
        return real(password, **kwargs)

    monkeypatch.setattr(passwords.hashlib, "scrypt", spy)
    assert not verify_password("pw", None)
    assert not verify_password("pw", "garbage")
    assert costs == [1 << DEFAULT.log2_n] * 2


def test_password_length_is_bounded() -> None:
    with pytest.raises(ValueError):
        hash_password("")
    with pytest.raises(ValueError):
        hash_password("x" * (passwords.MAX_PASSWORD_CHARS + 1))


def test_client_secrets_are_random_shown_once_and_stored_as_a_hash() -> None:
    secret = new_client_secret()
    assert len(secret.value) >= 43  # 32 random bytes, base64url
    assert secret.value not in secret.hashed
    assert secret.value not in repr(secret)
    assert verify_client_secret(secret.value, secret.hashed)
    assert not verify_client_secret(secret.value + "x", secret.hashed)
    assert not verify_client_secret("", secret.hashed)
    assert new_client_secret().value != secret.value
