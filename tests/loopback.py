"""A real uvicorn serving an ASGI app on 127.0.0.1 for the length of a block: the
server under test end to end, a webhook receiver, a fake identity provider."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

WAIT = 10.0


def free_port() -> int:
    """A port nothing listens on now (for a server whose URL must be known up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@asynccontextmanager
async def on_loopback(app: Any, port: int = 0, lifespan: str = "auto") -> AsyncIterator[int]:
    """Serve `app` in this event loop on 127.0.0.1:`port` (0: one the system picks)
    until the block ends; yields the port it listens on."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
    )
    async with serving(config) as bound:
        yield bound


@asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[int]:
    """Serve as `config` says (as `fhirserver serve` would: serving.server_config) until the
    block ends; yields the port it listens on."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.02)
        bound: int = server.servers[0].sockets[0].getsockname()[1]
        yield bound
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT)
