"""A websocket shows a bound client only what the client that asked for its binding token
may read (Subscriptions Backport IG 1.1.0 OperationDefinition
`backport-subscription-get-ws-binding-token`: the token is "an access token that a
client may use to show authorization during a websocket connection"; R4
`subscription.html` "Security and Privacy": a notification must not expose what the
recipient may not see; DESIGN.md "Authorization"), on every store: an event whose focus
that client may not read is sent as `$events` shows it (the event left out of the
notification, only its count), and the token lasts no longer than the client's access."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.auth.access import Access
from fhirserver.auth.registry import secret_key
from fhirserver.auth.scopes import parse_scopes
from fhirserver.config import Settings
from fhirserver.subscriptions.websocket import TOKEN_KIND, Limits, Session, redeem_token
from tests.backends import Backend
from tests.clock import MovableClock
from tests.rest.token_apps import ADMIN, authenticator, bearer
from tests.subscriptions.conftest import START

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
WAIT = 10.0
# A nurse on patient p1's ward: may read the Subscription, and p1's Observations only.
NURSE = Access(
    client_id="ward-app",
    scopes=parse_scopes("user/Subscription.rs patient/Observation.rs"),
    user="Practitioner/1",
    patient="p1",
    token_id="jti-nurse",
)


def _subscription(content: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "ward",
        "criteria": "Observation?status=final",
        "channel": {
            "type": "websocket",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
            },
        },
    }


def _observation(patient: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "HIV viral load"},
        "subject": {"reference": f"Patient/{patient}"},
        "valueString": value,
    }


@dataclass
class Pipe:
    """The session's `Connection`: what the client sends and what it was sent."""

    inbox: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    sent: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    async def receive_text(self) -> str | None:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        await self.sent.put(text)

    async def close(self, code: int, reason: str) -> None:
        await self.sent.put(f"closed {code} {reason}")

    async def next(self) -> dict[str, Any]:
        bundle: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.sent.get(), WAIT))
        return bundle


@dataclass
class Ward:
    app: Starlette
    http: httpx.AsyncClient
    clock: MovableClock
    # Sessions still running when a test fails end before the app does.
    running: list[asyncio.Task[None]] = field(default_factory=list)

    async def post(self, resource: dict[str, Any]) -> str:
        made = await self.http.post(
            f"/{resource['resourceType']}", json=resource, headers=bearer(ADMIN)
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    async def token(self, subscription_id: str, as_: str) -> dict[str, str]:
        answer = await self.http.get(
            f"/Subscription/{subscription_id}/$get-ws-binding-token", headers=bearer(as_)
        )
        assert answer.status_code == 200, answer.text
        return {
            p["name"]: str(p.get("valueString", p.get("valueDateTime")))
            for p in answer.json()["parameter"]
        }

    async def match(self) -> None:
        for _ in range(3):
            await self.app.state.jobs.run_due()
            self.clock.move_to(self.clock() + timedelta(seconds=2))

    def session(self, pipe: Pipe) -> Session:
        state = self.app.state
        return Session(
            connection=pipe,
            source=state.notification_source,
            store=state.store,
            clock=self.clock,
            counts=state.ws_sockets,
            authorization=True,
            limits=Limits(poll_seconds=0.01),
        )


@pytest.fixture
async def ward(settings: Settings, test_backend: Backend) -> AsyncIterator[Ward]:
    clock = MovableClock()
    clock.move_to(START)
    tokens = {"nurse": NURSE, "short": _expiring(START + timedelta(minutes=1))}
    app = create_app(
        settings, store=test_backend.store, clock=clock, authenticator=authenticator(tokens)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir"
        ) as http:
            ward = Ward(app, http, clock)
            try:
                yield ward
            finally:
                for task in ward.running:
                    task.cancel()
                await asyncio.gather(*ward.running, return_exceptions=True)


def _expiring(at: Any) -> Access:
    return Access(
        client_id="ward-app",
        scopes=NURSE.scopes,
        user="Practitioner/1",
        patient="p1",
        token_id="jti-short",
        expires_at=at,
    )


def _status(bundle: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}


async def _bound(ward: Ward, subscription_id: str, as_: str) -> tuple[Pipe, asyncio.Task[None]]:
    token = (await ward.token(subscription_id, as_))["token"]
    pipe = Pipe()
    task = asyncio.create_task(ward.session(pipe).run())
    ward.running.append(task)
    await pipe.inbox.put(f"bind-with-token {token}")
    assert _status(await pipe.next())["type"]["valueCode"] == "handshake"
    return pipe, task


async def _ended(pipe: Pipe, task: asyncio.Task[None]) -> None:
    await pipe.inbox.put(None)
    await asyncio.wait_for(task, WAIT)


@pytest.mark.parametrize("content", ["full-resource", "id-only"])
async def test_a_socket_sends_only_the_events_its_token_holder_may_read(
    ward: Ward, content: str
) -> None:
    sid = await ward.post(_subscription(content))
    nurse, nurse_task = await _bound(ward, sid, "nurse")
    admin, admin_task = await _bound(ward, sid, ADMIN)
    await ward.post(_observation("p2", "SECRET"))
    await ward.post(_observation("p1", "ward"))
    await ward.match()
    # The subscription's owner may read both.
    seen = [orjson.dumps(await admin.next()).decode() for _ in range(2)]
    assert "SECRET" in seen[0] or content == "id-only"
    assert all("Observation/" in text for text in seen)
    # The nurse gets both notifications, in order: the first as `empty` content (its
    # number, no focus, no resource).
    hidden, shown = await nurse.next(), await nurse.next()
    status = _status(hidden)
    assert status["events-since-subscription-start"]["valueString"] == "1"
    assert [p["name"] for p in status["notification-event"]["part"]] == [
        "event-number",
        "timestamp",
    ]
    assert len(hidden["entry"]) == 1
    text = orjson.dumps(hidden).decode()
    assert "SECRET" not in text and "Observation/" not in text
    assert _status(shown)["events-since-subscription-start"]["valueString"] == "2"
    assert "Observation/" in orjson.dumps(shown).decode()
    if content == "full-resource":
        assert [e["resource"]["valueString"] for e in shown["entry"][1:]] == ["ward"]
    await _ended(nurse, nurse_task)
    await _ended(admin, admin_task)


async def test_a_token_expires_no_later_than_the_access_it_was_issued_under(ward: Ward) -> None:
    sid = await ward.post(_subscription("id-only"))
    answer = await ward.token(sid, "short")
    assert answer["expiration"].startswith("2031-03-01T09:01:00")


async def test_a_token_recorded_without_its_access_binds_nothing(ward: Ward) -> None:
    # As an older server recorded one: who asked, but not what they may read.
    token = secrets.token_urlsafe(32)
    key = secret_key(token)
    body = {
        "subscriptions": ["a"],
        "key": key,
        "expires": (START + timedelta(minutes=5)).isoformat(),
    }
    await ward.app.state.store.put_record(TOKEN_KIND, key, body, START + timedelta(minutes=5))
    assert await redeem_token(ward.app.state.store, token, START) is None
