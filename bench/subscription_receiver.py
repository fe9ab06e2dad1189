"""The notification receiver of the subscriptions bench: a small HTTP/1.1 server on a
free loopback port, in the bench's own process so that its arrival times
(`time.perf_counter`) and the writer's share one clock.

It answers every request 200 with an empty body and records the request's path and
when its body had arrived; a waiter can ask for the next arrival on a path, or for a
count of arrivals in all.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


@dataclass
class Receiver:
    url: str = ""
    # (path, arrival time) in arrival order.
    arrivals: list[tuple[str, float]] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    # Open connections, closed when the receiver stops (the server keeps them alive).
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def duplicates(self, prefix: str) -> int:
        """Arrivals beyond the first on the same path under `prefix` (each event has a
        path of its own when the subscription sends the resource:
        [endpoint]/Observation/[id])."""
        paths = Counter(path for path, _ in self.arrivals if path.startswith(prefix))
        return sum(n - 1 for n in paths.values())

    async def wait_for_count(self, count: int) -> float:
        """The arrival time of the `count`th notification (callers bound the wait)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.arrivals) >= count)
            return self.arrivals[count - 1][1]

    async def _record(self, path: str) -> None:
        arrived = time.perf_counter()
        async with self._changed:
            self.arrivals.append((path, arrived))
            self._changed.notify_all()


async def _serve(
    receiver: Receiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    receiver._writers.add(writer)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length:
                await reader.readexactly(length)
            await receiver._record(path)
            writer.write(_OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        receiver._writers.discard(writer)
        writer.close()


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(lambda r, w: _serve(receiver, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.close()
        for writer in list(receiver._writers):
            writer.close()
        await server.wait_closed()
