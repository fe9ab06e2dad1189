"""The websocket channel end to end: a real uvicorn on a loopback port, a real websocket
client (the `websockets` library) and HTTP client, on every store.

Subscriptions Backport IG 1.1.0: `$get-ws-binding-token` (OperationDefinition
`backport-subscription-get-ws-binding-token`) and the R5 `subscription.html` websocket
channel (`bind-with-token`, a handshake, then one notification Bundle per event, and
heartbeats at `backport-heartbeat-period`); R4 `subscription.html` websocket (`bind
{id}` -> `bound {id}`, `ping {id}`). Notifications come from a fake `NotificationSource`
standing in for the store's event log (events appended while a socket is open are what
another server process would have recorded).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fhirserver.app import create_app
from fhirserver.auth.access import Access
from fhirserver.auth.scopes import parse_scopes
from fhirserver.config import Settings
from fhirserver.resources import codec
from fhirserver.serving import listen, server_config
from fhirserver.storage.base import Store
from fhirserver.subscriptions.websocket import HEARTBEAT_PERIOD, Limits
from tests.backends import Backend
from tests.clock import MovableClock
from tests.loopback import free_port, on_loopback
from tests.rest.token_apps import ADMIN, authenticator, bearer

WAIT = 10.0
FHIR_JSON = "application/fhir+json"
OPERATION = "$get-ws-binding-token"


# --- A stand-in event log -----------------------------------------------------------------


def _bundle(subscription_id: str, kind: str, since_start: int) -> dict[str, Any]:
    status = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "subscription",
                "valueReference": {"reference": f"Subscription/{subscription_id}"},
            },
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(since_start)},
        ],
    }
    return {"resourceType": "Bundle", "type": "history", "entry": [{"resource": status}]}


@dataclass
class FakeNotifications:
    """Subscriptions as the store has them; events as a test records them."""

    store: Store
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def record(self, subscription_id: str) -> int:
        log = self.events.setdefault(subscription_id, [])
        log.append(_bundle(subscription_id, "event-notification", len(log) + 1))
        return len(log)

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        version = await self.store.read("Subscription", subscription_id)
        if version is None or version.body is None:
            return None
        return codec.load_object(version.body)

    async def events_after(
        self, subscription_id: str, after: int, limit: int, access: Access
    ) -> list[tuple[int, dict[str, Any]]]:
        log = self.events.get(subscription_id, [])
        return [(n, b) for n, b in enumerate(log, 1) if n > after][:limit]

    async def events_so_far(self, subscription_id: str) -> int:
        return len(self.events.get(subscription_id, []))

    async def handshake(self, subscription_id: str) -> dict[str, Any]:
        return _bundle(subscription_id, "handshake", await self.events_so_far(subscription_id))

    async def heartbeat(self, subscription_id: str) -> dict[str, Any]:
        return _bundle(subscription_id, "heartbeat", await self.events_so_far(subscription_id))


def kind_of(message: str) -> tuple[str, str, int]:
    """(notification type, subscription reference, eventsSinceSubscriptionStart)."""
    bundle = orjson.loads(message)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    values = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    return (
        values["type"]["valueCode"],
        values["subscription"]["valueReference"]["reference"],
        int(values["events-since-subscription-start"]["valueString"]),
    )


# --- The server -----------------------------------------------------------------------------


def subscription(
    subscription_id: str, channel: str = "websocket", heartbeat: int = 0
) -> dict[str, Any]:
    extensions = [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": heartbeat}] if heartbeat else []
    return {
        "resourceType": "Subscription",
        "id": subscription_id,
        "status": "active",
        "reason": "front desk",
        "criteria": "Encounter?status=arrived",
        "channel": {
            "type": channel,
            # A rest-hook needs somewhere to deliver (R4 subscription.html "rest-hook").
            **({"endpoint": "https://hooks.example.org/fhir"} if channel == "rest-hook" else {}),
            **({"extension": extensions} if extensions else {}),
        },
    }


@dataclass
class Server:
    app: Starlette
    http: httpx.AsyncClient
    source: FakeNotifications
    clock: MovableClock
    base: str

    async def put(self, resource: dict[str, Any]) -> None:
        path = f"/{resource['resourceType']}/{resource['id']}"
        answer = await self.http.put(path, json=resource, headers=bearer(ADMIN))
        assert answer.status_code in (200, 201), answer.text

    async def token(self, subscription_id: str, as_: str = ADMIN) -> str:
        answer = await self.http.get(
            f"/Subscription/{subscription_id}/{OPERATION}", headers=bearer(as_)
        )
        assert answer.status_code == 200, answer.text
        return parameters(answer.json())["token"]

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/websocket"


def parameters(resource: dict[str, Any]) -> dict[str, str]:
    assert resource["resourceType"] == "Parameters"
    return {
        p["name"]: next(v for k, v in p.items() if k.startswith("value"))
        for p in resource["parameter"]
    }


LIMITS = Limits(
    bind_seconds=2.0,
    poll_seconds=0.05,
    recheck_seconds=0.2,
    max_sockets_per_token=2,
    max_subscriptions_per_socket=2,
)


@asynccontextmanager
async def serving(
    settings: Settings,
    backend: Backend,
    tokens: Mapping[str, Access] | None = None,
    source: bool = True,
) -> AsyncIterator[Server]:
    clock = MovableClock()
    auth = authenticator(tokens) if tokens is not None else None
    app = create_app(settings, store=backend.store, clock=clock, authenticator=auth)
    notifications = FakeNotifications(backend.store)
    app.state.notification_source = notifications if source else None
    app.state.ws_limits = LIMITS
    port = free_port()
    base = f"http://127.0.0.1:{port}/fhir"
    async with on_loopback(app, port, lifespan="on"):
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=WAIT) as http:
            yield Server(app, http, notifications, clock, base)


@pytest.fixture
async def server(settings: Settings, test_backend: Backend) -> AsyncIterator[Server]:
    async with serving(settings, test_backend) as running:
        await running.put(subscription("desk", heartbeat=60))
        await running.put(subscription("other"))
        await running.put(subscription("hook", channel="rest-hook"))
        yield running


async def receive(ws: ClientConnection) -> str:
    message = await asyncio.wait_for(ws.recv(), WAIT)
    assert isinstance(message, str)
    return message


async def closed_with(ws: ClientConnection) -> tuple[list[str], int | None]:
    """What the server sent until it closed the socket, and its close code."""
    lines: list[str] = []
    with pytest.raises(ConnectionClosed):
        while True:
            lines.append(await receive(ws))
    return lines, ws.close_code


# --- $get-ws-binding-token -------------------------------------------------------------------


async def test_the_operation_answers_a_token_its_expiry_and_where_to_connect(
    server: Server,
) -> None:
    before = datetime.now(UTC)
    answer = await server.http.post(f"/Subscription/desk/{OPERATION}", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    values = parameters(answer.json())
    assert len(values["token"]) >= 40
    expiration = datetime.fromisoformat(values["expiration"].replace("Z", "+00:00"))
    assert before + timedelta(minutes=4) < expiration <= datetime.now(UTC) + timedelta(minutes=5)
    assert values["subscription"] == "Subscription/desk"
    assert values["websocket-url"] == server.ws_url


async def test_the_type_level_operation_binds_several_subscriptions(server: Server) -> None:
    answer = await server.http.get(
        f"/Subscription/{OPERATION}",
        params=[("id", "desk"), ("id", "other")],
        headers=bearer(ADMIN),
    )
    assert answer.status_code == 200, answer.text
    named = [p["valueString"] for p in answer.json()["parameter"] if p["name"] == "subscription"]
    assert named == ["Subscription/desk", "Subscription/other"]
    token = parameters(answer.json())["token"]
    server.source.record("other")
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        handshakes = {kind_of(await receive(ws))[:2] for _ in range(2)}
        assert handshakes == {
            ("handshake", "Subscription/desk"),
            ("handshake", "Subscription/other"),
        }
        server.source.record("desk")
        server.source.record("other")
        events = {kind_of(await receive(ws)) for _ in range(2)}
        assert events == {
            ("event-notification", "Subscription/desk", 1),
            ("event-notification", "Subscription/other", 2),
        }


async def test_the_type_level_operation_needs_an_id(server: Server) -> None:
    answer = await server.http.get(f"/Subscription/{OPERATION}", headers=bearer(ADMIN))
    assert answer.status_code == 400
    assert "id" in answer.json()["issue"][0]["diagnostics"]


async def test_no_token_for_a_rest_hook_subscription(server: Server) -> None:
    answer = await server.http.get(f"/Subscription/hook/{OPERATION}", headers=bearer(ADMIN))
    assert answer.status_code == 400
    assert "websocket" in answer.json()["issue"][0]["diagnostics"]


async def test_no_token_for_a_subscription_that_does_not_exist(server: Server) -> None:
    answer = await server.http.get(f"/Subscription/nope/{OPERATION}", headers=bearer(ADMIN))
    assert answer.status_code == 404


# --- Binding and notifications -----------------------------------------------------------------


async def test_a_bound_socket_gets_the_handshake_then_each_event_in_order(server: Server) -> None:
    token = await server.token("desk")
    server.source.record("desk")  # before binding: not sent on the socket (see $events)
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws)) == ("handshake", "Subscription/desk", 1)
        for _ in range(5):
            server.source.record("desk")
        numbers = [kind_of(await receive(ws)) for _ in range(5)]
        assert numbers == [("event-notification", "Subscription/desk", n) for n in range(2, 7)]
        # Another subscription's events never reach this socket.
        server.source.record("other")
        server.source.record("desk")
        assert kind_of(await receive(ws)) == ("event-notification", "Subscription/desk", 7)


async def test_a_heartbeat_when_nothing_was_sent_for_the_period(server: Server) -> None:
    token = await server.token("desk")
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws))[0] == "handshake"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.5)
        server.clock.move_to(datetime.now(UTC) + timedelta(seconds=61))
        assert kind_of(await receive(ws)) == ("heartbeat", "Subscription/desk", 0)


async def test_a_reconnecting_client_resumes_after_what_it_missed(server: Server) -> None:
    token = await server.token("desk")
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        await receive(ws)
        server.source.record("desk")
        assert kind_of(await receive(ws))[2] == 1
    server.source.record("desk")  # while away
    server.source.record("desk")
    # The token is good until it expires; the handshake tells how far the log is, so
    # the client knows to replay events 2 and 3 through $events.
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws)) == ("handshake", "Subscription/desk", 3)
        server.source.record("desk")
        assert kind_of(await receive(ws)) == ("event-notification", "Subscription/desk", 4)


async def test_an_expired_token_is_refused_and_the_socket_closed(server: Server) -> None:
    token = await server.token("desk")
    server.clock.move_to(datetime.now(UTC) + timedelta(minutes=6))
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        lines, code = await closed_with(ws)
    assert lines == ["error the binding token is unknown or has expired"]
    assert code == 1008


async def test_an_unknown_token_is_refused(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("bind-with-token " + "x" * 43)
        lines, code = await closed_with(ws)
    assert lines == ["error the binding token is unknown or has expired"] and code == 1008


async def test_a_deleted_subscription_ends_its_socket(server: Server) -> None:
    token = await server.token("other")
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        await receive(ws)
        answer = await server.http.delete("/Subscription/other", headers=bearer(ADMIN))
        assert answer.status_code in (200, 204)
        lines, code = await closed_with(ws)
    assert lines[0] == "error subscription other has ended" and code == 1000


async def test_r4_bind_gets_bound_and_a_ping_per_event(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("bind desk")
        assert await receive(ws) == "bound desk"
        server.source.record("desk")
        server.source.record("desk")
        assert [await receive(ws), await receive(ws)] == ["ping desk", "ping desk"]


async def test_r4_bind_of_a_rest_hook_subscription_is_refused(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("bind hook")
        lines, code = await closed_with(ws)
    assert lines == ["error no websocket subscription hook"] and code == 1008


# --- Limits -----------------------------------------------------------------------------------


async def test_an_unknown_command_gets_an_error_line_and_the_socket_stays(server: Server) -> None:
    token = await server.token("desk")
    async with connect(server.ws_url) as ws:
        for command in ("hello", "bind-with-token", "\x00\xff", ""):
            await ws.send(command)
            assert (await receive(ws)).startswith("error unknown command")
        await ws.send(b"binary")
        assert (await receive(ws)).startswith("error unknown command")
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws))[0] == "handshake"


async def test_a_message_too_long_closes_the_socket(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        await ws.send("bind " + "a" * 5000)
        lines, code = await closed_with(ws)
    assert lines == ["error message too long"] and code == 1009


async def test_the_server_reads_no_client_message_beyond_its_cap(
    settings: Settings, test_backend: Backend
) -> None:
    # uvicorn as `fhirserver serve` configures it: a 64 KiB message is refused by the
    # websocket protocol (1009) before the app sees it (it would answer "error message
    # too long" after buffering the whole message, up to uvicorn's default 16 MiB).
    app = create_app(settings, store=test_backend.store)
    app.state.notification_source = FakeNotifications(test_backend.store)
    sock, bound = listen(settings.with_overrides(host="127.0.0.1", port=0))
    server = uvicorn.Server(server_config(app, bound))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.02)
        url = f"ws://127.0.0.1:{bound.port}{bound.base_path}/websocket"
        async with connect(url, max_size=None) as ws:
            await ws.send("bind " + "a" * 65536)
            lines, code = await closed_with(ws)
        assert lines == [] and code == 1009
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)
        sock.close()


async def test_a_socket_that_does_not_bind_is_closed(server: Server) -> None:
    async with connect(server.ws_url) as ws:
        lines, code = await closed_with(ws)
    assert lines == ["error no bind within 2 seconds"] and code == 1008


async def test_sockets_per_token_are_limited(server: Server) -> None:
    token = await server.token("desk")
    async with connect(server.ws_url) as first, connect(server.ws_url) as second:
        for ws in (first, second):
            await ws.send(f"bind-with-token {token}")
            assert kind_of(await receive(ws))[0] == "handshake"
        async with connect(server.ws_url) as third:
            await third.send(f"bind-with-token {token}")
            lines, code = await closed_with(third)
        assert lines == ["error too many sockets for this token or subscription"]
        assert code == 1013
    # Closed sockets are given back.
    async with connect(server.ws_url) as again:
        await again.send(f"bind-with-token {token}")
        assert kind_of(await receive(again))[0] == "handshake"


async def test_subscriptions_per_socket_are_limited(server: Server) -> None:
    await server.put(subscription("third"))
    async with connect(server.ws_url) as ws:
        for subscription_id in ("desk", "other"):
            await ws.send(f"bind {subscription_id}")
            assert await receive(ws) == f"bound {subscription_id}"
        await ws.send("bind third")
        lines, code = await closed_with(ws)
    assert lines == ["error one socket binds at most 2 subscriptions"] and code == 1008


async def test_without_a_notification_source_websockets_are_not_available(
    settings: Settings, test_backend: Backend
) -> None:
    async with serving(settings, test_backend, source=False) as running:
        await running.put(subscription("desk"))
        answer = await running.http.get(f"/Subscription/desk/{OPERATION}", headers=bearer(ADMIN))
        assert answer.status_code == 400
        assert "not available" in answer.json()["issue"][0]["diagnostics"]
        async with connect(running.ws_url) as ws:
            lines, code = await closed_with(ws)
    assert lines == ["error websocket notifications are not available on this server"]
    assert code == 1013


# --- With authorization on ------------------------------------------------------------------


def reader(expires_at: datetime | None = None) -> Access:
    return Access(
        client_id="desk-app",
        scopes=parse_scopes("user/Subscription.rs"),
        user="Practitioner/1",
        token_id="jti-desk",
        expires_at=expires_at,
    )


PATIENT_APP = Access(
    client_id="patient-app", scopes=parse_scopes("patient/Patient.rs"), patient="p1"
)


@pytest.fixture
async def guarded(settings: Settings, test_backend: Backend) -> AsyncIterator[Server]:
    soon = datetime.now(UTC) + timedelta(minutes=1)
    tokens = {"desk": reader(), "short": reader(soon), "patient": PATIENT_APP}
    async with serving(settings, test_backend, tokens) as running:
        await running.put(subscription("desk"))
        yield running


async def test_only_a_caller_who_may_read_the_subscription_gets_a_token(guarded: Server) -> None:
    refused = await guarded.http.get(f"/Subscription/desk/{OPERATION}", headers=bearer("patient"))
    assert refused.status_code == 403
    anonymous = await guarded.http.get(f"/Subscription/desk/{OPERATION}")
    assert anonymous.status_code == 401
    token = await guarded.token("desk", as_="desk")
    async with connect(guarded.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws))[0] == "handshake"


async def test_r4_bind_without_a_token_is_refused_with_authorization_on(guarded: Server) -> None:
    async with connect(guarded.ws_url) as ws:
        await ws.send("bind desk")
        lines, code = await closed_with(ws)
    assert lines == ["error bind needs a token on this server: send bind-with-token <token>"]
    assert code == 1008


async def test_the_socket_closes_when_the_access_it_was_bound_under_expires(
    guarded: Server,
) -> None:
    token = await guarded.token("desk", as_="short")
    async with connect(guarded.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws))[0] == "handshake"
        guarded.clock.move_to(datetime.now(UTC) + timedelta(minutes=2))
        lines, code = await closed_with(ws)
    assert lines == ["error the access this socket was bound under has expired"] and code == 1008


async def test_a_failing_event_log_closes_the_socket_without_a_trace(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(subscription_id: str, after: int, limit: int, access: Access) -> list[Any]:
        raise RuntimeError("the event log is on fire at /secret/path")

    token = await server.token("desk")
    async with connect(server.ws_url) as ws:
        await ws.send(f"bind-with-token {token}")
        assert kind_of(await receive(ws))[0] == "handshake"
        server.source.events_after = broken  # type: ignore[method-assign]
        lines, code = await closed_with(ws)
    assert lines == ["error internal error"] and code == 1011
    # The operator sees what failed; the client saw none of it.
    assert "on fire" in caplog.text and token not in caplog.text


async def test_behind_https_the_websocket_url_is_wss(
    settings: Settings, test_backend: Backend
) -> None:
    public = replace(settings, public_url="https://fhir.example.org/fhir")
    app = create_app(public, store=test_backend.store)
    app.state.notification_source = FakeNotifications(test_backend.store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir", headers=headers
        ) as http:
            put = await http.put("/Subscription/desk", json=subscription("desk"))
            assert put.status_code == 201
            answer = await http.post(f"/Subscription/desk/{OPERATION}")
    assert parameters(answer.json())["websocket-url"] == "wss://fhir.example.org/fhir/websocket"
