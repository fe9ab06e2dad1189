"""Concurrent HTTP load: a fixed number of Patient creates or reads, timed end to end.

`concurrency` workers, each with its own httpx.AsyncClient and so its own kept-alive
connection, pull request numbers from a shared counter until `count` requests are done;
the rate is count / wall-clock seconds. Any unexpected status stops the run with LoadError.
One client per worker rather than one shared pool of `concurrency` connections: the
shared pool costs the client about twice the CPU per request, and on a small machine the
client, not the server, would then set the pace.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

MEDIA_TYPE = "application/fhir+json"
_PATIENT_ID = re.compile(r"/Patient/([^/]+)")


class LoadError(RuntimeError):
    """A server answered a request with something other than success."""


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.requests + other.requests, self.seconds + other.seconds)


Send = Callable[[httpx.AsyncClient, int], Awaitable[None]]


async def _run(base_url: str, count: int, concurrency: int, send: Send) -> Rate:
    numbers = iter(range(count))

    async def worker() -> None:
        async with httpx.AsyncClient(
            base_url=base_url, timeout=30.0, headers={"Accept": MEDIA_TYPE}
        ) as http:
            for number in numbers:
                await send(http, number)

    return Rate(count, await run_concurrently(worker, concurrency))


async def run_concurrently(
    worker: Callable[[], Coroutine[Any, Any, None]], concurrency: int
) -> float:
    """Seconds taken by `concurrency` copies of `worker`; the first failure cancels
    the others and is raised."""
    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return time.perf_counter() - started


def _check(response: httpx.Response, expected: int) -> None:
    if response.status_code != expected:
        raise LoadError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}, not {expected}: {response.text[:300]}"
        )


async def create(
    base_url: str, body: bytes, count: int, concurrency: int
) -> tuple[Rate, list[str]]:
    """POST `body` to /Patient `count` times; the rate and the ids from the Location headers."""
    ids: list[str] = []

    async def send(http: httpx.AsyncClient, number: int) -> None:
        response = await http.post("Patient", content=body, headers={"Content-Type": MEDIA_TYPE})
        _check(response, 201)
        found = _PATIENT_ID.search(response.headers.get("Location", ""))
        if found is None:
            raise LoadError(f"POST Patient answered without a Patient Location: {response}")
        ids.append(found.group(1))

    return await _run(base_url, count, concurrency, send), ids


async def read(base_url: str, ids: list[str], count: int, concurrency: int) -> Rate:
    """GET /Patient/{id} `count` times, going round `ids`."""

    async def send(http: httpx.AsyncClient, number: int) -> None:
        _check(await http.get(f"Patient/{ids[number % len(ids)]}"), 200)

    return await _run(base_url, count, concurrency, send)
