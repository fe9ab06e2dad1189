"""Search latency over HTTP on the Synthea store, next to its floor: hand-written SQL.

For each Case (bench.search_cases), `requests` searches are sent one after the other to
a `fhirserver serve` process on the loaded store, after `warmup` untimed ones; each is
timed from sending the request to having the whole answer (status, headers and body).
The floor runs the Case's own SQL the same number of times, in this process, with the
sqlite3 module on the same file, timed from execute to having fetched every row. Each
answer's ids (matches of the first page and included resources) are compared with the
floor's for the same request: a floor that answers something else would be no floor.
Searches are sent with `Prefer: handling=strict`, so a parameter fhirserver does not
understand is a 400 rather than silently ignored.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench.search_cases import Case, Fixture
from fhirserver.storage.sqlite.schema import connect

MEDIA_TYPE = "application/fhir+json"
Ids = frozenset[str]


class SearchError(RuntimeError):
    """fhirserver answered a search with something other than a searchset Bundle."""


@dataclass(frozen=True, slots=True)
class Latencies:
    seconds: tuple[float, ...]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000


@dataclass(frozen=True, slots=True)
class Timed:
    latencies: Latencies
    # The ids answered (Type/id, matches and includes) for each timed request, in order.
    answers: tuple[Ids, ...]


@dataclass(frozen=True, slots=True)
class CaseFigures:
    case: Case
    server: Timed
    floor: Timed

    @property
    def agreeing(self) -> int:
        """How many requests got the same ids from fhirserver as from the floor."""
        return sum(a == b for a, b in zip(self.server.answers, self.floor.answers, strict=True))

    def first_difference(self) -> tuple[Ids, Ids] | None:
        for ours, floor in zip(self.server.answers, self.floor.answers, strict=True):
            if ours != floor:
                return ours, floor
        return None


def _bundle_ids(response: httpx.Response) -> Ids:
    if response.status_code != 200:
        raise SearchError(
            f"GET {response.request.url} answered {response.status_code}: {response.text[:300]}"
        )
    bundle = orjson.loads(response.content)
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        raise SearchError(f"GET {response.request.url} did not answer a searchset Bundle")
    return frozenset(
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode") in ("match", "include")
    )


async def time_server(
    base_url: str, case: Case, fixture: Fixture, requests: int, warmup: int
) -> Timed:
    """`requests` sequential searches of `case` over one kept-alive connection."""
    headers = {"Accept": MEDIA_TYPE, "Prefer": "handling=strict"}
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, headers=headers) as http:
        for n in range(warmup):
            _bundle_ids(await http.get(case.resource_type, params=tuple(case.params(fixture, n))))
        seconds, responses = [], []
        for n in range(requests):
            started = time.perf_counter()
            response = await http.get(case.resource_type, params=tuple(case.params(fixture, n)))
            seconds.append(time.perf_counter() - started)
            responses.append(response)
    return Timed(Latencies(tuple(seconds)), tuple(_bundle_ids(r) for r in responses))


def time_floor(
    connection: sqlite3.Connection, case: Case, fixture: Fixture, requests: int, warmup: int
) -> Timed:
    """`requests` runs of the case's hand-written SQL, each fetching every row."""
    for n in range(warmup):
        connection.execute(case.floor_sql, case.floor_args(fixture, n)).fetchall()
    seconds, answers = [], []
    for n in range(requests):
        args = case.floor_args(fixture, n)
        started = time.perf_counter()
        rows = connection.execute(case.floor_sql, args).fetchall()
        seconds.append(time.perf_counter() - started)
        answers.append(frozenset(f"{row[0]}/{row[1]}" for row in rows))
    return Timed(Latencies(tuple(seconds)), tuple(answers))


def floor_connection(path: Path) -> sqlite3.Connection:
    # As SqliteStore opens its readers; only reads are run on it.
    return connect(str(path), "NORMAL", 10_000)


async def measure(
    base_url: str,
    path: Path,
    cases: tuple[Case, ...],
    fixture: Fixture,
    requests: int,
    warmup: int,
    progress: Callable[[str], None] = print,
) -> tuple[list[CaseFigures], list[str]]:
    """Every case over HTTP, then its floor (never both at once, so neither slows the
    other); the figures, and what went wrong with the cases that could not be measured."""
    figures, failures = [], []
    connection = floor_connection(path)
    try:
        for case in cases:
            progress(f"search: {case.label}")
            try:
                server = await time_server(base_url, case, fixture, requests, warmup)
            except SearchError as error:
                failures.append(f"FAILED {case.label}: {error}")
                continue
            try:
                floor = time_floor(connection, case, fixture, requests, warmup)
            except sqlite3.Error as error:
                failures.append(f"FAILED {case.label}: the floor SQL failed: {error}")
                continue
            figures.append(CaseFigures(case, server, floor))
    finally:
        connection.close()
    return figures, failures
