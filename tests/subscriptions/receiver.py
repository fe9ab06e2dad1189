"""A notification endpoint for the subscription tests, served for real by uvicorn on a
loopback port: it records every request (method, path, headers, body) and answers
with the status the test sets (200 by default), after an optional delay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.loopback import on_loopback

WAIT = 10.0


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # time.monotonic() when the request arrived.
    at: float = 0.0

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    # Requests answered with a failure status (not in `received`).
    refused: int = 0

    def app(self) -> Starlette:
        async def record(request: Request) -> Response:
            body = await request.body()
            arrived = time.monotonic()
            if self.delay:
                await asyncio.sleep(self.delay)
            redirected = request.url.path == "/redirected"
            if self.status >= 300 and not redirected:
                self.refused += 1
                # A redirect points back here, where the request would be taken.
                headers = {"Location": "/redirected"} if self.status < 400 else {}
                return Response(status_code=self.status, headers=headers)
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.received.append(Received(request.method, request.url.path, headers, body, arrived))
            return Response(status_code=200)

        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", record, methods=methods)])


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    async with on_loopback(receiver.app()) as port:
        receiver.url = f"http://127.0.0.1:{port}"
        yield receiver
