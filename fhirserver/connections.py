"""Connections one client cannot hog (issue 20, finding 5): a deadline for a request's
headers, a cap on open connections per client address, and a quiet line (not a
traceback) for a client that goes away mid-request.

uvicorn times out only idle keep-alive connections, and only once a first response has
been sent: a client that sends half its headers and stalls holds its connection, and
its slot in the server, for ever. `guarded_protocol` is uvicorn's HTTP protocol with a
header deadline (from the connection's start, and on a kept-alive connection from the
next request's first byte, to its complete headers: nginx's `client_header_timeout`;
idle time between requests is the keep-alive's, nginx's `keepalive_timeout`) and the
cap (nginx's `limit_conn`). A connection upgraded to a websocket keeps its place until
the websocket closes (`GuardedWebSocket`). The body's deadline is an ASGI middleware
(`BodyDeadline`), as the app is what reads the body. Peers in
FHIRSERVER_TRUSTED_PROXIES are not capped: every client behind them shares their
address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from fhirserver.errors import FHIRError

# uvicorn's own server log, where it reports invalid requests: what an operator reads.
logger = logging.getLogger("uvicorn.error")

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/fhir+json\r\n"
    b"retry-after: 5\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
_TOO_MANY = (
    b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"throttled",'
    b'"diagnostics":"Too many open connections from this address"}]}'
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class ConnectionGuard:
    """The limits, and the connections open per client address in this server."""

    header_seconds: float = 10.0
    max_per_client: int = 64
    # Peers whose connections are not counted (trusted proxies).
    exempt: Sequence[Network] = ()
    open: Counter[str] = field(default_factory=Counter)

    def counted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return True
        return not any(address in network for network in self.exempt)

    def release(self, host: str) -> None:
        """A counted connection from `host` closed."""
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]


class RequestTimeout(FHIRError):
    """The body did not arrive in time (R4 has no code of its own: `timeout`)."""

    status, code = 408, "timeout"


class GuardedWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol (pass as uvicorn.Config's `ws`), giving back the
    place its connection held under the guard when the websocket closes."""

    release: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.release is not None:
            self.release()
            self.release = None
        super().connection_lost(exc)


def guarded_protocol(guard: ConnectionGuard) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP/1.1 protocol under `guard` (pass as uvicorn.Config's `http`).

    Built on the httptools (llhttp) protocol, not h11: under the bench's 16 clients
    creating Patients, the server spent about 200 of its 1,450 microseconds of CPU a
    create less (h11 parses in Python). The
    parser's callbacks mark a request's first byte (`on_message_begin`) and its complete
    headers (`on_headers_complete`), which is where the deadline starts and stops."""

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        # Whether a request's headers ran out of time while the answer before it was
        # still being made: their deadline starts again, whole, once that answer is out.
        _deadline_after_answer = False
        _host: str | None = None
        _refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            if host is not None and guard.counted(host):
                if guard.open[host] >= guard.max_per_client:
                    logger.info("%s: connection refused, %d already open", host, guard.open[host])
                    # Answer, then close a moment later, reading and dropping what the
                    # client sent meanwhile: closing on unread data would reset the
                    # connection, and the client would never see the answer.
                    self._refused = True
                    transport.write(_REFUSED % (len(_TOO_MANY), _TOO_MANY))
                    transport.write_eof()
                    self.loop.call_later(1.0, transport.close)
                    return
                guard.open[host] += 1
                self._host = host
            # A connection that never sends a request is held to the deadline too.
            self._start_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_deadline()
            if self._host is not None:
                guard.release(self._host)
                self._host = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)

        def on_message_begin(self) -> None:
            # A request's first byte; on a new connection the deadline already runs.
            if self._deadline is None:
                self._start_deadline()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._stop_deadline()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._deadline_after_answer and not self.transport.is_closing():
                self._start_deadline()

        def handle_websocket_upgrade(self) -> None:
            # From here the transport is the websocket's: this protocol never hears of
            # the connection again, so its place passes to the websocket.
            self._stop_deadline()
            host, self._host = self._host, None
            super().handle_websocket_upgrade()
            websocket = self.transport.get_protocol()
            if host is not None:
                if isinstance(websocket, GuardedWebSocket):
                    websocket.release = functools.partial(guard.release, host)
                else:  # nothing would give the place back
                    guard.release(host)

        def _start_deadline(self) -> None:
            self._stop_deadline()
            self._deadline = self.loop.call_later(guard.header_seconds, self._headers_late)

        def _stop_deadline(self) -> None:
            self._deadline_after_answer = False
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # The next request was begun (pipelined) while this one is answered:
                # closing now would cut that answer short, so the next request's
                # headers get their full time once the answer is out (a client may
                # reasonably wait for it), not a timer's next round, which may come
                # just after.
                self._deadline_after_answer = True
                return
            host = self.client[0] if self.client else "?"
            logger.info(
                "%s: no complete request headers in %g s; closed", host, guard.header_seconds
            )
            self.transport.close()

    return GuardedProtocol


class BodyDeadline:
    """ASGI middleware: each part of a request body must arrive within `seconds` of the
    last (nginx's `client_body_timeout`), else 408 and the connection closed. A body
    read whole is not timed further: waiting for a disconnect is not reading a body."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                client = scope.get("client")
                logger.info(
                    "%s: request body stalled for %g s; answered 408",
                    client[0] if client else "?",
                    self.seconds,
                )
                raise RequestTimeout(
                    f"The request body did not arrive within {self.seconds:g} s",
                    headers={"Connection": "close"},
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


def client_gone(scope: dict[str, Any]) -> None:
    """One line for a client that disconnected before the app had its whole request."""
    client = scope.get("client")
    logger.info(
        "%s: client disconnected during %s %s",
        client[0] if client else "?",
        scope.get("method", "?"),
        scope.get("path", "?"),
    )
