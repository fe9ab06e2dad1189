"""The subscriptions benchmark (issue 15 point 8): notification latency and delivery
throughput of rest-hook subscriptions, each next to the bare write measured in the same
run on the same server.

A real `fhirserver serve` (bench.servers, SQLite in a temp folder) and a real receiver
(bench.subscription_receiver) in this process, so the writer's and the receiver's
clocks are one (`time.perf_counter`).

- Floor: the same Observation POSTed with no subscription active, one at a time
  (latency p50/p95), then `throughput_writes` of them from `concurrency` clients (writes/s).
- Latency: one active criteria subscription (rest-hook, no payload) matching the
  Observations; each write waits for its notification before the next; the figure is
  the time from the write's response (the committed write) to the notification's
  arrival, p50 and p95.
- Throughput: `subscriptions` active subscriptions all matching (rest-hook, the
  resource as payload, so each event arrives at a path of its own and duplicates can be
  counted), the writes sent as fast as `concurrency` clients can; the figure is
  notifications delivered per second until all subscriptions x writes arrived.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench import servers
from bench.subscription_receiver import Receiver, receiving

FHIR_JSON = "application/fhir+json"
CODE = "http://loinc.org|8867-4"
CRITERIA = "Observation?code=" + CODE
OBSERVATION = orjson.dumps(
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/bench"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
)
# How long one notification may take before the bench gives up.
NOTIFICATION_TIMEOUT = 30.0
_WIDTH = 40


class SubscriptionBenchError(RuntimeError):
    """A write failed, or notifications did not all arrive in time."""


@dataclass(frozen=True, slots=True)
class SubscriptionParams:
    latency_writes: int = 200
    throughput_writes: int = 200
    subscriptions: int = 100
    concurrency: int = 16


@dataclass(frozen=True, slots=True)
class Percentiles:
    p50: float
    p95: float

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        ordered = sorted(seconds)
        return cls(statistics.median(ordered), ordered[round(0.95 * (len(ordered) - 1))])


@dataclass(frozen=True, slots=True)
class SubscriptionFigures:
    write_latency: Percentiles
    notification_latency: Percentiles
    writes_per_second: float
    notifications: int
    notifications_per_second: float
    duplicates: int


async def _write(client: httpx.AsyncClient) -> float:
    """POST one Observation; when its response (the committed write) was in."""
    response = await client.post(
        "/Observation", content=OBSERVATION, headers={"content-type": FHIR_JSON}
    )
    if response.status_code != 201:
        raise SubscriptionBenchError(f"a write answered {response.status_code}")
    return time.perf_counter()


async def _subscribe(client: httpx.AsyncClient, endpoint: str, payload: bool) -> str:
    channel: dict[str, str] = {"type": "rest-hook", "endpoint": endpoint}
    if payload:
        channel["payload"] = FHIR_JSON
    body = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "bench",
        "criteria": CRITERIA,
        "channel": channel,
    }
    response = await client.post(
        "/Subscription", content=orjson.dumps(body), headers={"content-type": FHIR_JSON}
    )
    created = response.json() if response.status_code == 201 else {}
    if created.get("status") != "active":
        raise SubscriptionBenchError(f"a Subscription was not accepted ({response.status_code})")
    return str(created["id"])


async def _bare_latency(client: httpx.AsyncClient, writes: int) -> Percentiles:
    times = []
    for _ in range(writes):
        started = time.perf_counter()
        times.append(await _write(client) - started)
    return Percentiles.of(times)


async def _concurrently(count: int, clients: int, one: Callable[[], Awaitable[float]]) -> None:
    left = iter(range(count))

    async def client() -> None:
        for _ in left:
            await one()

    await asyncio.gather(*(client() for _ in range(clients)))


async def _bare_throughput(client: httpx.AsyncClient, params: SubscriptionParams) -> float:
    started = time.perf_counter()
    await _concurrently(params.throughput_writes, params.concurrency, lambda: _write(client))
    return params.throughput_writes / (time.perf_counter() - started)


async def _notification_latency(
    client: httpx.AsyncClient, receiver: Receiver, writes: int
) -> Percentiles:
    subscription_id = await _subscribe(client, receiver.url + "/latency", payload=False)
    times = []
    for _ in range(writes):
        expected = len(receiver.arrivals) + 1
        committed = await _write(client)
        try:
            async with asyncio.timeout(NOTIFICATION_TIMEOUT):
                arrived = await receiver.wait_for_count(expected)
        except TimeoutError:
            raise SubscriptionBenchError(
                f"no notification {NOTIFICATION_TIMEOUT:.0f} s after a write"
            ) from None
        times.append(arrived - committed)
    # Off before the throughput part: its notifications would be load of their own.
    await client.delete(f"/Subscription/{subscription_id}")
    return Percentiles.of(times)


async def _delivery_throughput(
    client: httpx.AsyncClient, receiver: Receiver, params: SubscriptionParams
) -> tuple[int, float, int]:
    """Notifications expected, delivered per second, and duplicates among them."""
    for n in range(params.subscriptions):
        await _subscribe(client, f"{receiver.url}/throughput/{n}", payload=True)
    already = len(receiver.arrivals)
    expected = params.subscriptions * params.throughput_writes
    started = time.perf_counter()
    await _concurrently(params.throughput_writes, params.concurrency, lambda: _write(client))
    try:
        async with asyncio.timeout(NOTIFICATION_TIMEOUT + expected / 50):
            last = await receiver.wait_for_count(already + expected)
    except TimeoutError:
        got = len(receiver.arrivals) - already
        raise SubscriptionBenchError(f"only {got} of {expected} notifications arrived") from None
    # A moment more for late duplicates to show.
    await asyncio.sleep(1.0)
    return expected, expected / (last - started), receiver.duplicates("/throughput/")


async def measure(params: SubscriptionParams) -> SubscriptionFigures:
    with tempfile.TemporaryDirectory(prefix="fhirserver-subs-") as scratch:
        command = servers.fhirserver_command(Path(scratch, "fhir.sqlite"))
        async with (
            servers.running("fhirserver", command) as server,
            receiving() as receiver,
            httpx.AsyncClient(
                base_url=server.base_url,
                timeout=NOTIFICATION_TIMEOUT,
                limits=httpx.Limits(max_connections=params.concurrency),
            ) as client,
        ):
            write_latency = await _bare_latency(client, params.latency_writes)
            writes_per_second = await _bare_throughput(client, params)
            latency = await _notification_latency(client, receiver, params.latency_writes)
            expected, per_second, duplicates = await _delivery_throughput(client, receiver, params)
    return SubscriptionFigures(
        write_latency, latency, writes_per_second, expected, per_second, duplicates
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _row(figure: str, value: str, floor: str = "", ratio: float | None = None) -> str:
    shown = "" if ratio is None else f"{ratio:#.3g}".rstrip(".")
    return f"{figure:<{_WIDTH}} {value:>16}   {floor:<28} {shown:>6}".rstrip()


def table(params: SubscriptionParams, figures: SubscriptionFigures) -> list[str]:
    bare, notified = figures.write_latency, figures.notification_latency
    return [
        f"{'figure':<{_WIDTH}} {'value':>16}   {'floor (bare write)':<28} {'ratio':>6}",
        _row(
            "notification latency p50",
            _ms(notified.p50),
            f"write p50 {_ms(bare.p50)}",
            notified.p50 / bare.p50,
        ),
        _row(
            "notification latency p95",
            _ms(notified.p95),
            f"write p95 {_ms(bare.p95)}",
            notified.p95 / bare.p95,
        ),
        _row(
            f"delivery, {params.subscriptions} subscriptions",
            f"{figures.notifications_per_second:,.0f} notif/s",
            f"writes {figures.writes_per_second:,.0f}/s",
            figures.notifications_per_second / figures.writes_per_second,
        ),
        _row("notifications delivered", f"{figures.notifications:,}"),
        _row("duplicates", f"{figures.duplicates:,}"),
    ]


async def run(params: SubscriptionParams) -> SubscriptionFigures:
    print(
        f"subscriptions: {params.latency_writes} writes one at a time, each waiting for its "
        f"notification (1 criteria subscription, no payload); then {params.subscriptions} "
        f"subscriptions and {params.throughput_writes} writes from {params.concurrency} "
        "clients; floors: the same writes with no subscription",
        flush=True,
    )
    figures = await measure(params)
    print("\n".join(table(params, figures)))
    return figures
