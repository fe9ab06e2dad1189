"""Bulk loading over HTTP: the Synthea Bundles POSTed as they are to a real server.

A `fhirserver serve` process on a fresh store (bench.servers) takes every Bundle file once,
unchanged (a transaction of POSTs with urn:uuid fullUrls), from `concurrency` clients at
once, each with its own httpx client and connection, pulling the next file from a shared
list. Each answer must be 200 with a transaction-response holding a 2xx entry per entry
sent; anything else stops the bench. `Prefer: return=minimal`, so the answers stay small
and the time is the server's writing, not its echoing the resources back.

The rate is resources (entries) / wall-clock seconds from the first POST to the last
answer. The server's CPU seconds are over the same span; its peak RSS is its VmHWM read
just before it is stopped, so it includes start-up and the whole load.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench import rss, servers
from bench.cpu import usage
from bench.load import run_concurrently
from bench.load_data import LoadBenchError, Survey

MEDIA_TYPE = "application/fhir+json"
# The largest Synthea Bundle is 3.3 MB; the server's default limit is 16 MiB.
MAX_BODY_BYTES = 32 * 1024 * 1024
# A Bundle can wait behind others for the store's one writer.
TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Http:
    resources: int
    seconds: float
    concurrency: int
    server_cpu_seconds: float
    peak_kib: int

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds


def server_command(store: Path) -> list[str]:
    # bench.servers.running passes no FHIRSERVER_* variable on; env(1) sets the body limit
    # and then execs the server, so the pid `running` yields is still the server's.
    return [
        "env",
        f"FHIRSERVER_MAX_BODY_BYTES={MAX_BODY_BYTES}",
        *servers.fhirserver_command(store),
    ]


async def measure(survey: Survey, store: Path, concurrency: int) -> Http:
    if survey.largest_bytes > MAX_BODY_BYTES:
        raise LoadBenchError(f"a Bundle of {survey.largest_bytes} bytes is over the body limit")
    async with servers.running("fhirserver", server_command(store)) as server:
        before = usage(server.pid)
        seconds = await _post_all(server.base_url, survey, concurrency)
        spent = (usage(server.pid) - before).server
        try:
            peak = rss.peak_kib(server.pid)
        except rss.MemoryUnknown as error:
            raise LoadBenchError(f"the server's peak RSS: {error}") from None
    if spent is None:
        raise LoadBenchError(f"the server's CPU time: no /proc/{server.pid}/stat")
    return Http(survey.total, seconds, concurrency, spent, peak)


async def _post_all(base_url: str, survey: Survey, concurrency: int) -> float:
    files = iter(survey.files)

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
            for file in files:
                body = await asyncio.to_thread(file.read_bytes)
                response = await http.post(
                    base_url,
                    content=body,
                    headers={
                        "Content-Type": MEDIA_TYPE,
                        "Accept": MEDIA_TYPE,
                        "Prefer": "return=minimal",
                    },
                )
                _check(file, response, survey.entries[file])

    return await run_concurrently(worker, concurrency)


def _check(file: Path, response: httpx.Response, sent: int) -> None:
    def fail(why: str) -> LoadBenchError:
        return LoadBenchError(f"POST {file.name}: {why}: {response.text[:300]}")

    if response.status_code != 200:
        raise fail(f"answered {response.status_code}, not 200")
    try:
        bundle = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise fail("the answer is not JSON") from None
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction-response":
        raise fail("the answer is not a transaction-response Bundle")
    entries = bundle.get("entry", [])
    if len(entries) != sent:
        raise fail(f"{len(entries)} response entries for {sent} sent")
    for entry in entries:
        status = str(entry.get("response", {}).get("status", ""))
        if not status.startswith("2"):
            raise fail(f"an entry answered {status!r}")
