"""One client's large resources next to another's reads (issue 20, finding 1).

A real `fhirserver serve` on SQLite; a reader GETs one small Patient on a fixed schedule
(open loop: every 10 ms whether or not the last read answered, each timed from when it
was due, so a stall shows in every read it holds up) while a writer POSTs large
Patients one after another. Printed: the reader's p50 / p99 / max, next to the floor
(the same reads with no writer, in the same run) as a ratio, for the server as it is
and with large bodies worked on the event loop (FHIRSERVER_OFFLOAD_BYTES above the
body size: how every body was handled before).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import servers

READ_EVERY = 0.01
FLOOR_SECONDS = 5.0
WRITES = 2
# A Patient of many names: seconds of parsing, validation and indexing (2.4 MB);
# and one of a 15 MB text: little to index, much to parse and store.
SHAPES: dict[str, dict[str, Any]] = {
    "60,000 names (2.4 MB)": {
        "resourceType": "Patient",
        "name": [{"family": f"F{i}", "given": ["G", f"H{i}"]} for i in range(60_000)],
    },
    "15 MB narrative": {
        "resourceType": "Patient",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 15_000_000 + "</div>",
        },
    },
}
ON_THE_LOOP = {"FHIRSERVER_OFFLOAD_BYTES": str(1 << 40)}


async def reads(base: str, path: str, until: asyncio.Event | float) -> list[float]:
    """Open-loop reads until the event is set (or for that many seconds)."""
    latencies: list[float] = []

    async def one(http: httpx.AsyncClient, due: float) -> None:
        response = await http.get(path)
        response.raise_for_status()
        latencies.append(time.perf_counter() - due)

    # Below the server's connections per client (64): reads past them wait in the pool,
    # still timed from when they were due.
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, timeout=300.0, limits=limits) as http:
        tasks = []
        due = start = time.perf_counter()
        while not (until.is_set() if isinstance(until, asyncio.Event) else due - start > until):
            tasks.append(asyncio.create_task(one(http, due)))
            due += READ_EVERY
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)
    return latencies


async def writes(base: str, body: bytes, done: asyncio.Event) -> list[int]:
    headers = {"Content-Type": "application/fhir+json"}
    async with httpx.AsyncClient(base_url=base, timeout=300.0, headers=headers) as http:
        try:
            return [(await http.post("/Patient", content=body)).status_code for _ in range(WRITES)]
        finally:
            done.set()


def _figures(latencies: list[float]) -> tuple[float, float, float]:
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return statistics.median(latencies) * 1000, p99 * 1000, max(latencies) * 1000


async def _measure(scratch: str, name: str, env: dict[str, str]) -> list[str]:
    command = servers.fhirserver_command(Path(scratch, f"{name}.sqlite"))
    lines = []
    async with servers.running(name, command, env) as server:
        base = server.base_url
        async with httpx.AsyncClient(base_url=base) as http:
            created = await http.post("/Patient", json={"resourceType": "Patient"})
            path = f"/Patient/{created.json()['id']}"
        floor = _figures(await reads(base, path, FLOOR_SECONDS))
        lines.append(
            f"  floor (no writer)            p50 {floor[0]:6.1f} ms  p99 {floor[1]:7.1f} ms"
            f"  max {floor[2]:7.1f} ms"
        )
        for shape, resource in SHAPES.items():
            done = asyncio.Event()
            body = orjson.dumps(resource)
            writer = asyncio.create_task(writes(base, body, done))
            latencies = await reads(base, path, done)
            statuses = await writer
            p50, p99, top = _figures(latencies)
            lines.append(
                f"  beside {shape:<22} p50 {p50:6.1f} ms  p99 {p99:7.1f} ms  max {top:7.1f} ms"
                f"  p99/floor {p99 / floor[1]:6.1f}  writes {statuses}"
            )
    return lines


async def run() -> None:
    print("isolation: a reader's latency while another client posts large resources")
    with tempfile.TemporaryDirectory(prefix="fhirserver-isolation-") as scratch:
        for name, env in (("as built", {}), ("bodies on the event loop", ON_THE_LOOP)):
            print(f" {name}:", flush=True)
            for line in await _measure(scratch, name.replace(" ", "-"), env):
                print(line, flush=True)
