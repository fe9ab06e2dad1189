"""Soak: many mixed requests against one real `fhirserver serve` (SQLite), RSS over time.

`concurrency` clients, each with its own kept-alive httpx connection, share one request
counter; request n is a create (1 in 10), a search (2 in 10, with a different name or
birth date each time, so a per-key cache would show), a search naming a ValueSet the
server does not know (1 in 20, a new 1 KB URL each time) or a read of one of the
Patients created so far. The server's VmRSS is printed before the load, every `requests / 10`
requests, at the end and after `idle` seconds without requests, with its VmHWM (the
kernel's exact peak). The run plateaus when the second half of the load added less than
`PLATEAU_SHARE` of the RSS it had at half-way (or less than `PLATEAU_FLOOR_KIB`):
caches filling up to their caps level off; a leak keeps growing with the work done.

Runnable on its own: `python -m bench soak [--requests N] [--concurrency C] [--idle S]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import rss, servers
from bench.load import MEDIA_TYPE, LoadError, run_concurrently
from bench.patient import PATIENT_JSON

REQUESTS = 200_000
CONCURRENCY = 8
IDLE_SECONDS = 15.0
CHECKPOINTS = 10
PLATEAU_SHARE = 0.10
PLATEAU_FLOOR_KIB = 16 * 1024
_SEED_PATIENTS = 100
_UNKNOWN_VALUE_SET = "http://example.org/fhir/ValueSet/" + "v" * 1000 + "-"


@dataclass(frozen=True, slots=True)
class SoakParams:
    requests: int = REQUESTS
    concurrency: int = CONCURRENCY
    idle: float = IDLE_SECONDS


@dataclass(slots=True)
class _Progress:
    pid: int
    every: int
    started: float = field(default_factory=time.perf_counter)
    done: int = 0
    ids: list[str] = field(default_factory=list)
    # (requests done, VmRSS KiB)
    rss: list[tuple[int, int]] = field(default_factory=list)

    def count(self) -> None:
        self.done += 1
        if self.done % self.every == 0:
            self.record(self.done, "load")

    def record(self, at: int, label: str) -> None:
        kib = rss.status_kib(self.pid, "VmRSS")
        if kib is None:
            raise rss.MemoryUnknown(f"no VmRSS in /proc/{self.pid}/status")
        self.rss.append((at, kib))
        seconds = time.perf_counter() - self.started
        print(
            f"  {label:<10} {at:>8} requests {seconds:7.1f} s  RSS {kib / 1024:7.1f} MiB",
            flush=True,
        )


def _patient(number: int) -> bytes:
    body = json.loads(PATIENT_JSON)
    body["name"] = [{"family": f"Soak{number}", "given": [f"G{number % 997}"]}]
    body["birthDate"] = f"{1930 + number % 90}-{1 + number % 12:02d}-{1 + number % 28:02d}"
    return json.dumps(body).encode()


def _search(number: int) -> str:
    # Distinct values on every search: a cache keyed on the query would grow with them.
    kind = number % 4
    if kind == 0:
        return f"Patient?name=Soak{number % 5000}"
    if kind == 1:
        return f"Patient?family:exact=Soak{number}&_count=5"
    if kind == 2:
        return f"Patient?birthdate=ge{1930 + number % 90}-01-01&_count=10&_sort=-_lastUpdated"
    return f"Patient?given=G{number % 997}&gender=male&_summary=count"


async def _send(http: httpx.AsyncClient, number: int, progress: _Progress) -> None:
    kind = number % 10
    if kind == 0:
        response = await http.post(
            "Patient", content=_patient(number), headers={"Content-Type": MEDIA_TYPE}
        )
        expected = 201
        if response.status_code == expected:
            progress.ids.append(response.headers["Location"].split("/Patient/")[1].split("/")[0])
    elif kind in (1, 2):
        response = await http.get(_search(number))
        expected = 200
    elif kind == 3 and number % 20 == 3:
        # A ValueSet of the client's choosing, a new one each time: the server cannot
        # expand it (400) and must not keep anything of it.
        response = await http.get(f"Observation?code:in={_UNKNOWN_VALUE_SET}{number}")
        expected = 400
    else:
        response = await http.get(f"Patient/{random.choice(progress.ids)}")
        expected = 200
    if response.status_code != expected:
        raise LoadError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}, not {expected}: {response.text[:300]}"
        )
    progress.count()


async def _load(base_url: str, params: SoakParams, progress: _Progress) -> float:
    numbers = iter(range(params.requests))

    async def worker() -> None:
        async with httpx.AsyncClient(
            base_url=base_url, timeout=60.0, headers={"Accept": MEDIA_TYPE}
        ) as http:
            for number in numbers:
                await _send(http, number, progress)

    return await run_concurrently(worker, params.concurrency)


def plateaus(points: list[tuple[int, int]]) -> bool:
    """Whether RSS sampled under load (requests done, KiB) levelled off: the second half
    of the load added less than PLATEAU_SHARE of the half-way RSS (or the floor)."""
    half = points[len(points) // 2][1]
    grown = points[-1][1] - half
    return grown <= max(PLATEAU_SHARE * half, PLATEAU_FLOOR_KIB)


async def run(params: SoakParams) -> None:
    print(
        f"soak: {params.requests} mixed requests (1/10 creates, 2/10 searches, "
        "1/20 searches on an unknown ValueSet, the rest reads) "
        f"from {params.concurrency} clients, then {params.idle:.0f} s idle",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fhirserver-soak-") as scratch:
        command = servers.fhirserver_command(Path(scratch, "fhir.sqlite"))
        async with servers.running("fhirserver", command) as server:
            progress = _Progress(server.pid, max(1, params.requests // CHECKPOINTS))
            progress.record(0, "start")
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60.0) as http:
                for number in range(_SEED_PATIENTS):
                    seed = await http.post(
                        "Patient", content=_patient(-number), headers={"Content-Type": MEDIA_TYPE}
                    )
                    progress.ids.append(
                        seed.headers["Location"].split("/Patient/")[1].split("/")[0]
                    )
            progress.started = time.perf_counter()
            seconds = await _load(server.base_url, params, progress)
            under_load = list(progress.rss[1:])
            if not under_load or under_load[-1][0] != params.requests:
                progress.record(params.requests, "end")
                under_load.append(progress.rss[-1])
            await asyncio.sleep(params.idle)
            progress.record(params.requests, f"idle {params.idle:.0f}s")
            peak = rss.peak_kib(server.pid)
    start, end, idle = progress.rss[0][1], under_load[-1][1], progress.rss[-1][1]
    verdict = "plateaus" if plateaus(under_load) else "KEEPS GROWING"
    print(
        f"soak: {params.requests} requests in {seconds:.1f} s "
        f"({params.requests / seconds:.0f}/s); RSS start {start / 1024:.1f} MiB, "
        f"peak {peak / 1024:.1f} MiB, end {end / 1024:.1f} MiB, "
        f"after {params.idle:.0f} s idle {idle / 1024:.1f} MiB: {verdict}",
        flush=True,
    )


def parse(argv: list[str]) -> SoakParams:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS, help="seconds")
    parsed = parser.parse_args(argv)
    if parsed.requests < CHECKPOINTS or parsed.concurrency < 1 or parsed.idle < 0:
        parser.error(f"--requests must be at least {CHECKPOINTS}, --concurrency at least 1")
    return SoakParams(parsed.requests, parsed.concurrency, parsed.idle)
