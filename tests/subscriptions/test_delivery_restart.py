"""An event survives its server being killed between the commit of the write and the
notification (DESIGN.md "Side effects and external calls"; issue 15 "Durable
delivery": a restart, also kill -9, loses no event): `fhirserver serve` is killed with
SIGKILL right after a matching write commits, started again on the same store, and
the endpoint gets the notification exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.test_serve import Launch, http_client, launch  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 2
WAIT = 30.0


class _Recorder(BaseHTTPRequestHandler):
    """Answers a notification only once the gate is open: one that arrives before is
    held unanswered (the first server is killed while it waits) and not counted, so
    the only deliveries counted are those a server saw acknowledged."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        gate: threading.Event = self.server.gate  # type: ignore[attr-defined]
        if not gate.is_set():
            gate.wait()
            return
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[str], threading.Event]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.paths = []  # type: ignore[attr-defined]
    gate = threading.Event()
    server.gate = gate  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.paths, gate  # type: ignore[attr-defined]
    finally:
        gate.set()
        server.shutdown()
        server.server_close()


def test_an_event_committed_before_a_kill_is_delivered_after_the_restart(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    endpoint: tuple[str, list[str], threading.Event],
) -> None:
    url, received, gate = endpoint
    store = tmp_path / "fhir.sqlite"
    # A short delivery timeout: the killed server's delivery lock (twice the timeout)
    # runs out soon after the restart.
    env = {
        "FHIRSERVER_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
        "FHIRSERVER_SUBSCRIPTION_TIMEOUT_SECONDS": "2",
    }
    first = launch(store=store, env=env)
    with http_client(first.base) as http:
        sub = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "restart test",
            "criteria": "Patient?family=kill",
            "channel": {"type": "rest-hook", "endpoint": url + "/hook"},
        }
        assert http.post("/Subscription", json=sub).status_code == 201
        patient = {"resourceType": "Patient", "name": [{"family": "kill"}]}
        assert http.post("/Patient", json=patient).status_code == 201
    # Committed; whatever the first server sent is still waiting for its answer.
    first.kill()
    gate.set()
    assert received == []

    second = launch(store=store, env=env)
    deadline = time.monotonic() + WAIT
    while not received:
        assert time.monotonic() < deadline, "the event was not delivered after the restart"
        time.sleep(0.1)
    time.sleep(2 * LEASE_SECONDS)
    assert received == ["/hook"]
    second.kill()
