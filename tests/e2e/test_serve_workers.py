"""`fhirserver serve --workers N`: N server processes on one port and one store
(DESIGN.md "Scale-out"; issue 18 point 4).

R4 http.html#trules (a transaction's conditional create is looked up inside its unit of
work: racing ones through different processes create one resource), Backport IG 1.1.0
"Notifications" (each event notified once, whichever process recorded it or ran the
job), and the process contract: one start-up line, every acknowledged write kept when
every process is killed with SIGKILL, a dead worker replaced, workers gone with their
parent, a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_serve import (  # noqa: F401 - the fixture
    HEADERS,
    HTTP_TIMEOUT,
    Launch,
    Server,
    http_client,
    launch,
)
from tests.e2e.test_subscription_telehealth_e2e import (  # noqa: F401 - the fixture
    QUIET,
    Received,
    activated,
    eventually,
    free_port,
    front_desk,
    notification,
    receiver,
)

pytestmark = pytest.mark.e2e


def children(parent: int) -> list[int]:
    """The worker processes of `parent`: its spawned children (not multiprocessing's
    resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
                continue
            with contextlib.suppress(OSError):
                if b"spawn_main" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return sorted(found)


def workers_of(server: Server, count: int = 2) -> list[int]:
    """The server's worker processes, once there are `count` of them (pebble's CPU
    processes start only on a large body, so none are counted here)."""
    return eventually(
        lambda: found if len(found := children(server.process.pid)) == count else None,
        f"{count} worker processes",
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def each_request(base: str, count: int, send: Callable[[httpx.Client, int], Any]) -> list[Any]:
    """`send(client, i)` for i in range(count) from 8 threads, each request on a new
    connection, so the kernel hands connections to every worker rather than keeping
    them with whichever accepted first."""
    local = threading.local()

    def one(i: int) -> Any:
        if not hasattr(local, "client"):
            local.client = httpx.Client(
                base_url=base,
                headers={**HEADERS, "Connection": "close"},
                timeout=HTTP_TIMEOUT * 3,
            )
        return send(local.client, i)

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def conditional_transaction(n: int) -> dict[str, Any]:
    organization_url = "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": organization_url,
                "resource": {
                    "resourceType": "Organization",
                    "identifier": [{"system": "urn:example:org", "value": "RACE"}],
                },
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": "identifier=urn:example:org|RACE",
                },
            },
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": f"Racer{n}"}],
                    "managingOrganization": {"reference": organization_url},
                },
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }


@pytest.fixture
def two_workers(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> tuple[Server, list[int]]:
    """`fhirserver serve --workers 2` on a fresh store, and its worker processes."""
    server = launch("--workers", "2", store=tmp_path / "fhir.sqlite")
    return server, workers_of(server)


def test_workers_share_one_port_and_one_store(
    two_workers: tuple[Server, list[int]],
) -> None:
    server, workers = two_workers
    before = {pid: cpu_seconds(pid) for pid in workers}
    answers = each_request(
        server.base, 60, lambda http, n: http.post("", json=conditional_transaction(n))
    )
    assert [a.status_code for a in answers] == [200] * 60, [a.text for a in answers]
    # Both processes did a share of the work (each transaction costs milliseconds).
    used = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
    assert all(seconds >= 0.05 for seconds in used.values()), used
    with http_client(server.base) as http:
        organizations = http.get("/Organization").json()
        assert organizations["total"] == 1
        only = organizations["entry"][0]["resource"]["id"]
        patients = http.get("/Patient", params={"organization": only, "_summary": "count"})
        assert patients.json()["total"] == 60
    assert server.stdout_lines()[:1] == [
        f"fhirserver: FHIR R4 at {server.base} (store {server.store})"
    ]


def connections_of(pid: int, port: int) -> int:
    """How many established TCP connections to `port` the process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    held = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                # State 01: ESTABLISHED; field 9: the socket's inode.
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    held += 1
    return held


def test_keep_alive_connections_opened_together_are_spread_over_the_workers(
    two_workers: tuple[Server, list[int]],
) -> None:
    """Clients with a pool of keep-alive connections (a load balancer, a bulk loader)
    open them at once. On one shared socket the worker that wakes first accepts every
    connection waiting, and the other worker idles for as long as they live; a socket
    per worker on the port (SO_REUSEPORT) lets the kernel spread them."""
    server, workers = two_workers
    port = int(server.base.split(":")[2].split("/")[0])

    async def open_together() -> dict[int, int]:
        # As a load client does it: one event loop, each of 16 clients with a
        # connection of its own, all sending their first request at once.
        clients = [httpx.AsyncClient(base_url=server.base, timeout=HTTP_TIMEOUT) for _ in range(16)]
        try:
            answers = await asyncio.gather(*(http.get("/metadata") for http in clients))
            assert [a.status_code for a in answers] == [200] * len(clients)
            return {pid: connections_of(pid, port) for pid in workers}
        finally:
            await asyncio.gather(*(http.aclose() for http in clients))

    held = asyncio.run(open_together())
    assert sum(held.values()) == 16, held
    assert all(count >= 2 for count in held.values()), held


def test_workers_notify_each_event_once(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    receiver: tuple[str, Received],  # noqa: F811
) -> None:
    """The matcher and the deliveries are jobs under leases: with two processes running
    jobs, every booked Appointment is notified exactly once."""
    url, received = receiver
    port = free_port()
    server = launch(
        "--workers", "2", "--port", str(port), store=tmp_path / "fhir.sqlite", port_flag=False
    )
    with http_client(server.base) as http:
        assert (
            http.put(
                "/Location/clinic-a", json={"resourceType": "Location", "id": "clinic-a"}
            ).status_code
            == 201
        )
        hook = {"type": "rest-hook", "endpoint": url + "/booked"}
        subscription = http.post(
            "/Subscription",
            json=front_desk("appointment-booked", hook, "Appointment?location=Location/clinic-a"),
        )
        assert subscription.status_code == 201, subscription.text
        activated(http, subscription.json()["id"])

    def book(http: httpx.Client, n: int) -> str:
        appointment = {
            "resourceType": "Appointment",
            "status": "booked",
            "description": f"visit {n}",
            "start": "2030-01-01T09:00:00Z",
            "end": "2030-01-01T09:30:00Z",
            "participant": [{"actor": {"reference": "Location/clinic-a"}, "status": "accepted"}],
        }
        created = http.post("/Appointment", json=appointment)
        assert created.status_code == 201, created.text
        return f"{server.base}/Appointment/{created.json()['id']}"

    booked = each_request(server.base, 30, book)

    def events() -> list[tuple[int, str]]:
        found = []
        for bundle in received.at("/booked"):
            kind, since, focuses, _ = notification(bundle)
            if kind == "event-notification":
                found += [(since, focus) for focus in focuses]
        return found

    eventually(lambda: len(events()) >= len(booked) or None, "every booking notified")
    time.sleep(QUIET)
    focuses = [focus for _, focus in events()]
    assert sorted(focuses) == sorted(booked)


def test_acknowledged_writes_survive_sigkill_of_every_process(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    store = tmp_path / "fhir.sqlite"
    server = launch("--workers", "2", store=store)
    workers = workers_of(server)

    def create(http: httpx.Client, n: int) -> dict[str, Any]:
        created = http.post(
            "/Patient",
            json={"resourceType": "Patient", "name": [{"family": f"Durable{n}"}]},
        )
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        return body

    acknowledged = each_request(server.base, 120, create)
    for pid in [server.process.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    server.kill()
    eventually(lambda: not any(alive(pid) for pid in workers) or None, "workers gone")

    restarted = launch("--workers", "2", store=store)
    with http_client(restarted.base) as http:
        for body in acknowledged:
            read = http.get(f"/Patient/{body['id']}")
            assert read.status_code == 200, read.text
            assert read.json() == body
        total = http.get("/Patient", params={"_summary": "count"}).json()["total"]
        assert total == len(acknowledged)


def test_workers_end_with_their_parent(
    two_workers: tuple[Server, list[int]],
) -> None:
    server, workers = two_workers
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    try:
        eventually(
            lambda: not any(alive(pid) for pid in workers) or None, "orphaned workers stop", 10.0
        )
    finally:
        for pid in filter(alive, workers):
            os.kill(pid, signal.SIGKILL)


def test_a_dead_worker_is_replaced(
    two_workers: tuple[Server, list[int]],
) -> None:
    server, (first, second) = two_workers
    os.kill(first, signal.SIGKILL)
    replaced = eventually(
        lambda: found if first not in (found := workers_of(server)) else None,
        "a replacement worker",
    )
    assert second in replaced and len(replaced) == 2
    answers = each_request(server.base, 20, lambda http, n: http.get("/metadata"))
    assert {a.status_code for a in answers} == {200}
    assert "ended (exit status -9); starting another" in server.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_worker_cleanly(
    two_workers: tuple[Server, list[int]],
    sig: signal.Signals,
) -> None:
    server, workers = two_workers
    with http_client(server.base) as http:
        assert http.get("/metadata").status_code == 200
        code, _ = server.stop(sig)
    assert code == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert not any(alive(pid) for pid in workers)
    assert len(server.stdout_lines()) == 1
