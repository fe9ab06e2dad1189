"""The authorization server's registry in the store (SMART App Launch 2.2
app-launch.html, RFC 6749 section 4.1.2 one-time codes, RFC 7523 section 3 jti
replay): clients, users, codes, refresh tokens, revocations and signing keys, on
every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from fhirserver.auth import registry
from fhirserver.auth.keystore import KeyCache, signing_keys
from fhirserver.auth.passwords import hash_client_secret
from fhirserver.storage.base import Store
from tests.clock import MovableClock

NOW = datetime.now(UTC)
GRANT = registry.AuthorizationGrant(
    client_id="app",
    redirect_uri="https://app.example/cb",
    scopes="openid fhirUser patient/*.rs",
    code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    username="alice",
    fhir_user="Patient/1",
    patient="1",
    nonce="n-1",
)


async def test_clients_round_trip(store: Store) -> None:
    client = registry.Client(
        "backend",
        "symmetric",
        "system/*.rs",
        redirect_uris=("https://a.example/cb",),
        secret_hash=hash_client_secret("s3cret"),
    )
    await registry.put_client(store, client)
    assert await registry.get_client(store, "backend", NOW) == client
    assert await registry.list_clients(store, NOW) == [client]
    assert await registry.remove_client(store, "backend") is True
    assert await registry.get_client(store, "backend", NOW) is None


async def test_users_round_trip(store: Store) -> None:
    user = registry.User("alice", "Patient/1", "$scrypt$...")
    await registry.put_user(store, user)
    assert await registry.get_user(store, "alice", NOW) == user
    assert await registry.list_users(store, NOW) == [user]
    assert await registry.remove_user(store, "alice") is True
    assert await registry.get_user(store, "alice", NOW) is None


def test_a_user_is_a_patient_practitioner_or_related_person() -> None:
    with pytest.raises(ValueError, match="fhirUser"):
        registry.User("mallory", "Organization/1", "x")


async def test_a_code_is_used_once_and_expires(store: Store) -> None:
    await registry.save_code(store, "code-1", GRANT, NOW + timedelta(minutes=1))
    taken = await asyncio.gather(*(registry.take_code(store, "code-1", NOW) for _ in range(4)))
    assert [t for t in taken if t is not None] == [GRANT]
    await registry.save_code(store, "code-2", GRANT, NOW + timedelta(minutes=1))
    assert await registry.take_code(store, "code-2", NOW + timedelta(minutes=1)) is None


async def test_codes_are_not_stored_in_the_clear(store: Store) -> None:
    await registry.save_code(store, "the-code-value", GRANT, NOW + timedelta(minutes=1))
    keys = [record.key for record in await store.list_records(registry.CODE, NOW)]
    assert keys == [registry.secret_key("the-code-value")]
    assert "the-code-value" not in keys[0]


async def test_refresh_token_rotation_takes_the_old_one(store: Store) -> None:
    grant = registry.RefreshGrant("app", "offline_access patient/*.rs", "alice", "Patient/1")
    await registry.save_refresh_token(store, "r1", grant, NOW + timedelta(days=1))
    assert await registry.take_refresh_token(store, "r1", NOW) == grant
    assert await registry.take_refresh_token(store, "r1", NOW) is None


async def test_revocation_lasts_until_the_token_would_expire(store: Store) -> None:
    await registry.revoke_token_id(store, "jti-1", NOW + timedelta(minutes=5))
    assert await registry.is_token_revoked(store, "jti-1", NOW) is True
    assert await registry.is_token_revoked(store, "jti-2", NOW) is False
    assert await registry.is_token_revoked(store, "jti-1", NOW + timedelta(minutes=5)) is False


async def test_an_assertion_jti_is_refused_the_second_time_per_client(store: Store) -> None:
    until = NOW + timedelta(minutes=5)
    assert await registry.assertion_seen_before(store, "a", "j", until, NOW) is False
    assert await registry.assertion_seen_before(store, "a", "j", until, NOW) is True
    assert await registry.assertion_seen_before(store, "b", "j", until, NOW) is False


async def test_signing_keys_are_made_once_and_rotated_with_grace(store: Store) -> None:
    clock = MovableClock()
    # The key is made at NOW, not at the real time: a run reaching this test more than
    # a minute after the module's import moved the clock less than a day past the key.
    clock.move_to(NOW)
    grace = timedelta(hours=2)
    first = await signing_keys(store, clock, grace=grace, rotate_after=timedelta(days=1))
    again = await signing_keys(store, clock, grace=grace, cache=KeyCache())
    assert again.current.kid == first.current.kid
    clock.move_to(NOW + timedelta(days=1, minutes=1))
    rotated = await signing_keys(store, clock, grace=grace, rotate_after=timedelta(days=1))
    assert rotated.current.kid != first.current.kid
    assert [k.kid for k in rotated.previous] == [first.current.kid]
    # Other processes see the rotated set.
    seen = await signing_keys(store, clock, grace=grace, rotate_after=timedelta(days=1))
    assert seen.current.kid == rotated.current.kid


async def test_concurrent_first_starts_agree_on_one_key(store: Store) -> None:
    clock = MovableClock()
    sets = await asyncio.gather(
        *(signing_keys(store, clock, grace=timedelta(hours=1)) for _ in range(3))
    )
    assert len({s.current.kid for s in sets}) == 1
