"""How long a websocket binding lasts, on every store: only while the access it was bound
under stands and while the subscription it was bound to is the same one.

Subscriptions Backport IG 1.1.0 OperationDefinition
`backport-subscription-get-ws-binding-token`: the token is "an access token that a
client may use to show authorization during a websocket connection", so a socket shows
nothing once that authorization is gone (RFC 7009 revocation, expiry, or the caller may
no longer read the Subscription; R4 `subscription.html` "Security and Privacy"). R4
`subscription.html` (Subscription "is deleted" ends it) and the IG's numbering of events
from the subscription's start (`eventsSinceSubscriptionStart`): a Subscription deleted
and created again under the same id is another subscription, numbered from 1, so a
socket bound to the first one, or a binding token issued for it, does not carry over.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from fhirserver.auth.registry import revoke_token_id
from fhirserver.subscriptions.websocket import Limits, Session
from tests.rest.token_apps import ADMIN, bearer
from tests.subscriptions import test_ws_access
from tests.subscriptions.test_ws_access import Pipe, Ward, _observation, _status, _subscription

# test_ws_access's app with a nurse's and a short-lived token, as this module's fixture.
ward = test_ws_access.ward

QUIET = 1.0


def _session(ward: Ward, pipe: Pipe, recheck: float) -> Session:
    state = ward.app.state
    return Session(
        connection=pipe,
        source=state.notification_source,
        store=state.store,
        clock=ward.clock,
        counts=state.ws_sockets,
        authorization=True,
        limits=Limits(poll_seconds=0.01, recheck_seconds=recheck),
    )


async def _bind(
    ward: Ward, subscription_id: str, as_: str, recheck: float = 0.05
) -> tuple[Pipe, asyncio.Task[None]]:
    token = (await ward.token(subscription_id, as_))["token"]
    return await _bind_token(ward, token, recheck)


async def _bind_token(ward: Ward, token: str, recheck: float) -> tuple[Pipe, asyncio.Task[None]]:
    pipe = Pipe()
    task = asyncio.create_task(_session(ward, pipe, recheck).run())
    ward.running.append(task)
    await pipe.inbox.put(f"bind-with-token {token}")
    return pipe, task


async def _handshake(pipe: Pipe) -> None:
    assert _status(await pipe.next())["type"]["valueCode"] == "handshake"


async def _until_closed(pipe: Pipe, task: asyncio.Task[None]) -> list[str]:
    """Everything the session sent, up to and with its close."""
    await asyncio.wait_for(task, 10.0)
    sent: list[str] = []
    while not pipe.sent.empty():
        sent.append(pipe.sent.get_nowait())
    return sent


async def _put(ward: Ward, resource: dict[str, Any]) -> None:
    answer = await ward.http.put(
        f"/Subscription/{resource['id']}", json=resource, headers=bearer(ADMIN)
    )
    assert answer.status_code == 201, answer.text


async def _delete(ward: Ward, subscription_id: str) -> None:
    answer = await ward.http.delete(f"/Subscription/{subscription_id}", headers=bearer(ADMIN))
    assert answer.status_code in (200, 204), answer.text


async def test_a_socket_bound_before_its_access_token_is_revoked_stops(ward: Ward) -> None:
    sid = await ward.post(_subscription("full-resource"))
    # The recheck is slow: the event arrives first, and is not sent.
    pipe, task = await _bind(ward, sid, "nurse", recheck=60.0)
    await _handshake(pipe)
    await revoke_token_id(ward.app.state.store, "jti-nurse", ward.clock() + timedelta(days=1))
    await ward.post(_observation("p1", "after revocation"))
    await ward.match()
    sent = await _until_closed(pipe, task)
    assert not any("after revocation" in line for line in sent)
    assert sent[-1].startswith("closed 1008 ")
    assert "revoked" in sent[-1]


async def test_a_revoked_socket_closes_at_its_recheck_with_no_event(ward: Ward) -> None:
    sid = await ward.post(_subscription("full-resource"))
    pipe, task = await _bind(ward, sid, "nurse")
    await _handshake(pipe)
    await revoke_token_id(ward.app.state.store, "jti-nurse", ward.clock() + timedelta(days=1))
    sent = await _until_closed(pipe, task)
    assert sent == [
        "error the access this socket was bound under was revoked",
        "closed 1008 the access this socket was bound under was revoked",
    ]


async def test_a_revoked_binding_ends_and_the_sockets_other_binding_stays(ward: Ward) -> None:
    nurse_sid = await ward.post(_subscription("full-resource"))
    admin_sid = await ward.post(_subscription("id-only"))
    pipe, task = await _bind(ward, nurse_sid, "nurse")
    await _handshake(pipe)
    admin_token = (await ward.token(admin_sid, ADMIN))["token"]
    await pipe.inbox.put(f"bind-with-token {admin_token}")
    await _handshake(pipe)
    await revoke_token_id(ward.app.state.store, "jti-nurse", ward.clock() + timedelta(days=1))
    assert await asyncio.wait_for(pipe.sent.get(), 10.0) == (
        f"error subscription {nurse_sid} has ended"
    )
    await ward.post(_observation("p1", "still the admin's"))
    await ward.match()
    # The admin's binding goes on: its event arrives, the nurse's does not.
    bundle = await pipe.next()
    assert _status(bundle)["subscription"]["valueReference"]["reference"].endswith(admin_sid)
    assert not task.done()
    await asyncio.sleep(QUIET)
    assert pipe.sent.empty()


@pytest.mark.parametrize(
    ("recheck", "new_events"),
    [
        # The recheck is slow: the session meets the change with events to send (the new
        # subscription's 4th would pass as the old one's next).
        (60.0, 4),
        # Fewer new events than the socket had seen: none to send; the recheck ends it.
        (0.05, 1),
    ],
)
async def test_a_socket_bound_across_a_delete_and_re_create_ends_cleanly(
    ward: Ward, recheck: float, new_events: int
) -> None:
    sub = {**_subscription("id-only"), "id": "ws1"}
    await _put(ward, sub)
    pipe, task = await _bind(ward, "ws1", ADMIN, recheck=recheck)
    await _handshake(pipe)
    for i in range(3):
        await ward.post(_observation("p1", f"old{i}"))
    await ward.match()
    for _ in range(3):
        await pipe.next()
    await _delete(ward, "ws1")
    await _put(ward, sub)
    for i in range(new_events):
        await ward.post(_observation("p1", f"new{i}"))
    await ward.match()
    sent = await _until_closed(pipe, task)
    # The new subscription's events (numbered from 1) are not its: none is sent as the
    # old one's 4th; the binding ends, the socket closes normally, nothing failed.
    assert sent[0] == "error subscription ws1 has ended", sent
    assert sent[-1].startswith("closed 1000 "), sent
    assert not any("internal error" in line for line in sent)


async def test_a_socket_whose_subscription_is_gone_between_rechecks_ends_cleanly(
    ward: Ward,
) -> None:
    sid = await ward.post(_subscription("id-only"))
    pipe, task = await _bind(ward, sid, ADMIN, recheck=60.0)
    await _handshake(pipe)
    await _delete(ward, sid)
    sent = await _until_closed(pipe, task)
    assert sent[0] == f"error subscription {sid} has ended", sent
    assert sent[-1].startswith("closed 1000 "), sent


async def test_a_binding_token_does_not_bind_a_re_created_subscription(ward: Ward) -> None:
    sub = {**_subscription("id-only"), "id": "ws2"}
    await _put(ward, sub)
    token = (await ward.token("ws2", ADMIN))["token"]
    await _delete(ward, "ws2")
    await _put(ward, sub)
    pipe, task = await _bind_token(ward, token, recheck=60.0)
    sent = await _until_closed(pipe, task)
    assert sent[0].startswith("error "), sent
    assert sent[-1].startswith("closed 1008 "), sent
    assert not any(line.startswith("{") for line in sent)
