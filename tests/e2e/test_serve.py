"""`fhirserver serve` as a real process over loopback HTTP.

R4 http.html#capabilities (GET [base]/metadata), http.html#mime-type, http.html#create,
#update, #history and http.html#concurrency (version-aware updates with If-Match: a stale
version gets 412 Precondition Failed). Also the process contract: one start-up line on
stdout naming the base URL, a clean exit on SIGTERM/SIGINT, durability across SIGKILL,
and FHIRSERVER_* environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
STARTUP_TIMEOUT = 30.0  # seconds for the start-up line
EXIT_TIMEOUT = 5.0  # seconds for a clean exit after SIGTERM / SIGINT
KILL_TIMEOUT = 10.0  # seconds for the process to vanish after SIGKILL
HTTP_TIMEOUT = 10.0  # seconds for any one HTTP request
STARTUP_LINE = re.compile(
    r"^fhirserver: FHIR R4 at (?P<base>http://127\.0\.0\.1:(?P<port>\d+)(?P<path>/\S*)?)"
    r" \(store (?P<store>.+)\)$"
)


def parse(text: str | bytes) -> Any:
    """JSON with decimals kept as their text, so 1.50 and 1.5 compare unequal."""
    return json.loads(text, parse_float=str)


def _default_signals() -> None:
    # As from a terminal: a CI runner may start pytest with SIGINT ignored, which the
    # child would inherit and which would change what Ctrl+C does to it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class Server:
    """One `fhirserver serve` process, its stdout lines and its stderr file."""

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    _first: queue.Queue[str | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None
    base: str = ""
    store: str = ""

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))
                if len(self.lines) == 1:
                    self._first.put(self.lines[0])
            self._first.put(None)  # EOF: the process closed stdout, or exited

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def wait_started(self) -> None:
        try:
            line = self._first.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no start-up line within {STARTUP_TIMEOUT}s; stderr:\n{self.stderr()}")
        if line is None:
            pytest.fail(
                f"server exited ({self.process.poll()}) before printing its base URL;"
                f" stderr:\n{self.stderr()}"
            )
        match = STARTUP_LINE.match(line)
        assert match is not None, f"unexpected start-up line {line!r}"
        self.base, self.store = match["base"], match["store"]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout_lines(self) -> list[str]:
        """All stdout lines; only complete once the process has exited."""
        if self._reader is not None:
            self._reader.join(timeout=KILL_TIMEOUT)
        return list(self.lines)

    def stop(self, sig: signal.Signals, timeout: float = EXIT_TIMEOUT) -> tuple[int, float]:
        """Send `sig`, wait for the exit; the exit code and how long it took."""
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout}s after {sig.name}; stderr:\n{self.stderr()}")
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=KILL_TIMEOUT)
        if self._reader is not None:
            self._reader.join(timeout=KILL_TIMEOUT)
            if self._reader.is_alive():
                # Something else holds the pipe open (an orphaned child): closing it
                # now would wait for the reader's lock for good.
                return
        if self.process.stdout is not None:
            self.process.stdout.close()


Launch = Callable[..., Server]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `fhirserver serve`; every process started is killed at teardown."""
    started: list[Server] = []

    def start(
        *args: str,
        store: Path | None = None,
        env: Mapping[str, str] | None = None,
        port_flag: bool = True,
    ) -> Server:
        command = [sys.executable, "-m", "fhirserver", "serve"]
        if port_flag:
            command += ["--port", "0"]
        if store is not None:
            command += ["--store", str(store)]
        command += list(args)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}
        environ.update(env or {})
        stderr_path = tmp_path / f"stderr-{len(started)}.txt"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=environ,
                cwd=tmp_path,
                preexec_fn=_default_signals,
            )
        server = Server(process, stderr_path)
        started.append(server)
        server.start_reading()
        server.wait_started()
        return server

    yield start
    for server in started:
        server.kill()


def http_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers=HEADERS, timeout=HTTP_TIMEOUT)


def assert_capability_statement(response: httpx.Response, base: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0].strip() == FHIR_JSON
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["implementation"]["url"] == base


def test_prints_one_line_and_serves_metadata(launch: Launch, tmp_path: Path) -> None:
    store = tmp_path / "fhir.sqlite"
    server = launch(store=store)
    assert server.base.endswith("/fhir")
    assert int(server.base.split(":")[2].split("/")[0]) > 0
    assert server.store == str(store)
    with http_client(server.base) as http:
        assert_capability_statement(http.get("/metadata"), server.base)
        # Without an Accept header the answer is FHIR JSON all the same.
        bare = httpx.get(f"{server.base}/metadata", timeout=HTTP_TIMEOUT)
        assert bare.headers["content-type"].split(";")[0].strip() == FHIR_JSON
    server.kill()
    assert server.stdout_lines() == [f"fhirserver: FHIR R4 at {server.base} (store {store})"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(launch: Launch, tmp_path: Path, sig: signal.Signals) -> None:
    server = launch(store=tmp_path / "fhir.sqlite")
    with http_client(server.base) as http:
        # An idle keep-alive connection must not hold the shutdown up.
        assert http.get("/metadata").status_code == 200
        code, took = server.stop(sig)
    stderr = server.stderr()
    assert "Traceback" not in stderr, stderr
    assert code == 0, f"exit code {code} after {sig.name}; stderr:\n{stderr}"
    assert took < EXIT_TIMEOUT
    assert len(server.stdout_lines()) == 1


def durable_patient(i: int, resource_id: str | None = None, gender: str | None = None) -> str:
    """Patient number `i` as JSON text, with a decimal whose trailing zero must survive."""
    patient: dict[str, Any] = {"resourceType": "Patient"}
    if resource_id is not None:
        patient["id"] = resource_id
    patient |= {
        "identifier": [{"system": "urn:test:durability", "value": str(i)}],
        "name": [{"family": f"Durable{i}", "given": ["Ann", "Marie"]}],
        "birthDate": f"19{i:02d}-01-01",
        "extension": [{"url": "urn:test:weight", "valueDecimal": "@DECIMAL@"}],
    }
    if gender is not None:
        patient["gender"] = gender
    return json.dumps(patient).replace('"@DECIMAL@"', "1.50")


def test_writes_survive_sigkill(launch: Launch, tmp_path: Path) -> None:
    store = tmp_path / "fhir.sqlite"
    count, updated_every = 50, 5
    server = launch(store=store)
    # The latest body the server answered with per id, and version 1 of the updated ones.
    latest: dict[str, Any] = {}
    first_versions: dict[str, Any] = {}
    with http_client(server.base) as http:
        for i in range(count):
            created = http.post("/Patient", content=durable_patient(i))
            assert created.status_code == 201, created.text
            body = parse(created.content)
            assert body["extension"][0]["valueDecimal"] == "1.50"
            latest[body["id"]] = body
        for resource_id in list(latest)[::updated_every]:
            i = int(latest[resource_id]["identifier"][0]["value"])
            updated = http.put(
                f"/Patient/{resource_id}",
                content=durable_patient(i, resource_id=resource_id, gender="female"),
                headers={"If-Match": 'W/"1"'},
            )
            assert updated.status_code == 200, updated.text
            first_versions[resource_id] = latest[resource_id]
            latest[resource_id] = parse(updated.content)
            assert latest[resource_id]["meta"]["versionId"] == "2"
            assert latest[resource_id]["gender"] == "female"
    assert len(first_versions) == count // updated_every

    server.process.send_signal(signal.SIGKILL)
    server.kill()
    assert server.process.returncode == -signal.SIGKILL

    restarted = launch(store=store)
    with http_client(restarted.base) as http:
        for resource_id, body in latest.items():
            read = http.get(f"/Patient/{resource_id}")
            assert read.status_code == 200, read.text
            assert parse(read.content) == body
        for resource_id, first in first_versions.items():
            history = http.get(f"/Patient/{resource_id}/_history")
            assert history.status_code == 200, history.text
            bundle = parse(history.content)
            assert bundle["total"] == 2
            assert [entry["resource"] for entry in bundle["entry"]] == [
                latest[resource_id],
                first,
            ]
        everything = http.get("/Patient/_history", params={"_count": "0"})
        assert everything.json()["total"] == count + len(first_versions)


def test_base_path_from_environment(launch: Launch, tmp_path: Path) -> None:
    server = launch(store=tmp_path / "fhir.sqlite", env={"FHIRSERVER_BASE_PATH": ""})
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.base), server.base
    with http_client(server.base) as http:
        assert_capability_statement(http.get("/metadata"), server.base)
        assert http.get("/fhir/metadata").status_code == 404


def test_store_from_environment(launch: Launch, tmp_path: Path) -> None:
    store = tmp_path / "elsewhere" / "nested" / "chosen.sqlite"
    server = launch(env={"FHIRSERVER_STORE": str(store)})
    assert server.store == str(store)
    assert store.is_file()
    with http_client(server.base) as http:
        created = http.post("/Patient", json={"resourceType": "Patient", "active": True})
        assert created.status_code == 201, created.text
    # Nothing went to the default location under the working directory.
    assert not (tmp_path / "data").exists()


def test_port_from_environment(launch: Launch, tmp_path: Path) -> None:
    server = launch(store=tmp_path / "fhir.sqlite", env={"FHIRSERVER_PORT": "0"}, port_flag=False)
    port = int(server.base.split(":")[2].split("/")[0])
    assert port not in (0, 8080)
    with http_client(server.base) as http:
        assert http.get("/metadata").status_code == 200


def test_port_zero_urls_name_the_port_bound(launch: Launch, tmp_path: Path) -> None:
    """`--port 0`: the URLs the server builds from its own base, not from a request
    (here a topic subscription's status, Backport IG `$status`), name the port the
    socket bound, never port 0."""
    server = launch(store=tmp_path / "fhir.sqlite")
    backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    subscription = {
        "resourceType": "Subscription",
        "meta": {"profile": [backport + "backport-subscription"]},
        "status": "requested",
        "reason": "port 0",
        "criteria": "http://fhirserver.dev/fhir/SubscriptionTopic/appointment-booked",
        # Nobody listens there: the handshake fails and is retried, which is no matter.
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
    }
    with http_client(server.base) as http:
        created = http.post("/Subscription", json=subscription)
        assert created.status_code == 201, created.text
        status = http.get(f"/Subscription/{created.json()['id']}/$status")
        assert status.status_code == 200, status.text
    parameters = status.json()["entry"][0]["resource"]["parameter"]
    [reference] = [
        p["valueReference"]["reference"] for p in parameters if p["name"] == "subscription"
    ]
    assert reference == f"{server.base}/Subscription/{created.json()['id']}"


async def test_concurrent_if_match_updates(launch: Launch, tmp_path: Path) -> None:
    server = launch(store=tmp_path / "fhir.sqlite")
    rounds = 10
    async with httpx.AsyncClient(
        base_url=server.base, headers=HEADERS, timeout=HTTP_TIMEOUT
    ) as http:
        ids: list[str] = []
        for i in range(rounds):
            created = await http.post(
                "/Patient", json={"resourceType": "Patient", "name": [{"family": f"Race{i}"}]}
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])

        def put(resource_id: str, family: str) -> Any:
            body = {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}]}
            return http.put(f"/Patient/{resource_id}", json=body, headers={"If-Match": 'W/"1"'})

        # Both contenders for every resource, all in flight at once.
        requests: Sequence[Any] = [put(rid, who) for rid in ids for who in ("Alice", "Bob")]
        responses: list[httpx.Response] = await asyncio.wait_for(
            asyncio.gather(*requests), timeout=HTTP_TIMEOUT * 2
        )
        for i, resource_id in enumerate(ids):
            pair = responses[2 * i : 2 * i + 2]
            statuses = sorted(r.status_code for r in pair)
            assert statuses == [200, 412], [r.text for r in pair]
            loser = next(r for r in pair if r.status_code == 412)
            assert loser.json()["resourceType"] == "OperationOutcome"
            winner = next(r for r in pair if r.status_code == 200)
            current = await http.get(f"/Patient/{resource_id}")
            assert current.json()["meta"]["versionId"] == "2"
            assert current.json()["name"] == winner.json()["name"]
            history = await http.get(f"/Patient/{resource_id}/_history")
            assert history.json()["total"] == 2


async def test_concurrent_transactions_create_one_resource(launch: Launch, tmp_path: Path) -> None:
    """R4 http.html#trules: a transaction's conditional create is looked up inside its
    unit of work. Two server processes on one store, racing transactions with the same
    ifNoneExist, end with exactly one Organization."""
    store = tmp_path / "fhir.sqlite"
    servers = [launch(store=store), launch(store=store)]
    identifier = {"system": "urn:example:org", "value": "RACE"}

    def transaction(n: int) -> dict[str, Any]:
        organization = {"resourceType": "Organization", "identifier": [identifier]}
        patient = {
            "resourceType": "Patient",
            "name": [{"family": f"Racer{n}"}],
            "managingOrganization": {"reference": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001"},
        }
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001",
                    "resource": organization,
                    "request": {
                        "method": "POST",
                        "url": "Organization",
                        "ifNoneExist": "identifier=urn:example:org|RACE",
                    },
                },
                {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
            ],
        }

    clients = [
        httpx.AsyncClient(base_url=s.base, headers=HEADERS, timeout=HTTP_TIMEOUT) for s in servers
    ]
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(clients[n % 2].post("", json=transaction(n)) for n in range(12))),
            timeout=HTTP_TIMEOUT * 2,
        )
        assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
        organizations = (await clients[0].get("/Organization")).json()
        assert organizations["total"] == 1
        only = organizations["entry"][0]["resource"]["id"]
        patients = (await clients[1].get("/Patient", params={"organization": only})).json()
        assert patients["total"] == 12
    finally:
        for client in clients:
            await client.aclose()


def test_upgraded_index_is_rebuilt_before_serving(launch: Launch, tmp_path: Path) -> None:
    """A store file whose index tables an upgrade replaces is reindexed before the
    server answers (DESIGN.md "Storage"), whichever of the start-up's openings of the
    store did the upgrade."""
    store = tmp_path / "fhir.sqlite"
    server = launch(store=store)
    with http_client(server.base) as http:
        lovelace = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Lovelace"}]}
        assert http.put("/Patient/p1", json=lovelace).status_code == 201
    assert server.stop(signal.SIGTERM)[0] == 0
    for workers in ("1", "2"):
        with sqlite3.connect(store) as connection:
            connection.execute("PRAGMA user_version = 1")
        restarted = launch("--workers", workers, store=store)
        with http_client(restarted.base) as http:
            found = http.get("/Patient", params={"name": "love"}).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == ["p1"], workers
        assert restarted.stop(signal.SIGTERM)[0] == 0
