"""Binding tokens of the websocket channel (Subscriptions Backport IG 1.1.0,
OperationDefinition `backport-subscription-get-ws-binding-token`: "An access token that
a client may use to show authorization during a websocket connection", valid until
`expiration`), on every store: random, kept only as a hash, good until they expire or
the access token they were issued under is revoked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirserver.auth.access import Access
from fhirserver.auth.registry import revoke_token_id
from fhirserver.auth.scopes import parse_scopes
from fhirserver.storage.base import Store
from fhirserver.subscriptions.websocket import (
    heartbeat_period,
    is_websocket,
    issue_token,
    redeem_token,
)
from tests.backends import BACKENDS, Backend, make_backend

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen = make_backend(str(request.param), tmp_path / "store.sqlite")
    await chosen.store.open()
    try:
        yield chosen
    finally:
        await chosen.store.close()
        chosen.cleanup()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


async def test_a_token_binds_its_subscriptions_until_it_expires(store: Store) -> None:
    token, issued = await issue_token(store, ("a", "b"), Access.everything(), T0, FIVE_MINUTES)
    assert issued.expires == T0 + FIVE_MINUTES
    binding = await redeem_token(store, token, T0 + timedelta(minutes=4))
    assert binding is not None
    assert binding.subscription_ids == ("a", "b")
    # Still good for a reconnect, until it expires.
    assert await redeem_token(store, token, T0 + timedelta(minutes=4, seconds=30)) is not None
    assert await redeem_token(store, token, T0 + FIVE_MINUTES) is None


async def test_tokens_are_random_and_unknown_ones_bind_nothing(store: Store) -> None:
    first, _ = await issue_token(store, ("a",), Access.everything(), T0, FIVE_MINUTES)
    second, _ = await issue_token(store, ("a",), Access.everything(), T0, FIVE_MINUTES)
    assert first != second and len(first) >= 40
    assert await redeem_token(store, first[:-1] + ("A" if first[-1] != "A" else "B"), T0) is None
    assert await redeem_token(store, "not a token", T0) is None
    assert await redeem_token(store, "", T0) is None


async def test_the_store_keeps_only_a_hash_of_the_token(backend: Backend) -> None:
    token, _ = await issue_token(backend.store, ("a",), Access.everything(), T0, FIVE_MINUTES)
    assert token not in repr(backend.dump())


async def test_a_token_lasts_no_longer_than_the_access_it_was_issued_under(store: Store) -> None:
    access = Access(
        client_id="app",
        scopes=parse_scopes("user/Subscription.rs"),
        token_id="jti-1",
        expires_at=T0 + timedelta(minutes=2),
    )
    token, issued = await issue_token(store, ("a",), access, T0, FIVE_MINUTES)
    assert issued.expires == T0 + timedelta(minutes=2)
    binding = await redeem_token(store, token, T0)
    assert binding is not None
    assert (binding.client_id, binding.access_token_id) == ("app", "jti-1")
    assert binding.access_expires == T0 + timedelta(minutes=2)
    assert await redeem_token(store, token, T0 + timedelta(minutes=2)) is None


async def test_revoking_the_access_token_voids_its_binding_tokens(store: Store) -> None:
    access = Access(client_id="app", scopes=parse_scopes("user/Subscription.rs"), token_id="jti-2")
    token, _ = await issue_token(store, ("a",), access, T0, FIVE_MINUTES)
    await revoke_token_id(store, "jti-2", T0 + timedelta(hours=1))
    assert await redeem_token(store, token, T0) is None


def test_the_channel_and_heartbeat_period_are_read_from_the_subscription() -> None:
    period = (
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
        "backport-heartbeat-period"
    )
    subscription = {
        "resourceType": "Subscription",
        "channel": {"type": "websocket", "extension": [{"url": period, "valueUnsignedInt": 30}]},
    }
    assert is_websocket(subscription)
    assert heartbeat_period(subscription) == timedelta(seconds=30)
    rest_hook = {"resourceType": "Subscription", "channel": {"type": "rest-hook"}}
    assert not is_websocket(rest_hook)
    assert heartbeat_period(rest_hook) is None
    assert not is_websocket({"resourceType": "Subscription"})
