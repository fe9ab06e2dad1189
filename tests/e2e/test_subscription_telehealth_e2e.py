"""A front desk follows one clinic's virtual visits without polling, end to end (issue 15
acceptance; Subscriptions R5 Backport IG 1.1.0 "Topic-Based Subscriptions in R4",
"Notifications" (handshake, event-notification, eventsSinceSubscriptionStart,
notificationEvent focus), "Filters" (backport-filter-criteria), "Payloads"
(full-resource), "Channels" (rest-hook; websocket with $get-ws-binding-token and
`bind-with-token`); README "Telehealth" and "Subscriptions").

`fhirserver serve` runs as a real process; a real HTTP receiver listens on a loopback
port. The front desk of clinic A subscribes (rest-hook, full-resource, filtered by its
Location) to `patient-waiting` and `visit-started`, and over a websocket to
`visit-ended`. Three visits run over HTTP, two at clinic A and one at clinic B: the
receiver gets each subscription's handshake, then clinic A's events in order, numbered
1, 2, with the Appointment or Encounter as focus and in the payload; nothing of clinic B.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import connect

from fhirserver.telehealth.virtual_service import virtual_service
from tests.e2e.test_serve import Launch, http_client, launch  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

T = TypeVar("T")
WAIT = 30.0  # seconds for the job runner (matcher and delivery poll about once a second)
QUIET = 3.0  # seconds in which nothing more may arrive
TOPIC = "http://fhirserver.dev/fhir/SubscriptionTopic/"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
VIRTUAL_SERVICE = "http://fhirserver.dev/fhir/StructureDefinition/virtual-service"
CHANNEL_TYPES = "http://fhirserver.dev/fhir/CodeSystem/virtual-service-type"


@dataclass
class Received:
    """The POSTs the receiver got, by path, in arrival order."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_path: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, path: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.by_path.setdefault(path, []).append(body)

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.by_path.get(path, ()))


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.received.add(self.path, json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = Received()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def eventually(probe: Callable[[], T | None], what: str, wait: float = WAIT) -> T:
    deadline = time.monotonic() + wait
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


def front_desk(topic: str, channel: dict[str, Any], filter_criteria: str) -> dict[str, Any]:
    """A Backport topic subscription (backport-subscription profile), full-resource."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested",
        "reason": "Clinic A front desk",
        "criteria": TOPIC + topic,
        "_criteria": {
            "extension": [
                {"url": BACKPORT + "backport-filter-criteria", "valueString": filter_criteria}
            ]
        },
        "channel": {
            **channel,
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "full-resource"}
                ]
            },
        },
    }


def notification(bundle: dict[str, Any]) -> tuple[str, int, list[str], list[dict[str, Any]]]:
    """(type, eventsSinceSubscriptionStart, the focus of each notificationEvent, the
    changed resources the Bundle carries after its status: not the topic's
    additional context, which come as GET entries)."""
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "Parameters"
    values = {p["name"]: p for p in status["parameter"]}
    focuses = [
        part["valueReference"]["reference"]
        for p in status["parameter"]
        if p["name"] == "notification-event"
        for part in p["part"]
        if part["name"] == "focus"
    ]
    carried = [
        entry["resource"]
        for entry in bundle["entry"][1:]
        if "resource" in entry and entry["request"]["method"] != "GET"
    ]
    return (
        values["type"]["valueCode"],
        int(values["events-since-subscription-start"]["valueString"]),
        focuses,
        carried,
    )


@dataclass
class Visit:
    appointment: dict[str, Any]
    encounter: dict[str, Any] | None = None


def book(http: httpx.Client, patient: str, clinic: str) -> Visit:
    """A virtual Appointment (Jitsi: no provider account) at `clinic`, provisioned."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": patient}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-one"}, "status": "accepted"},
            {"actor": {"reference": clinic}, "status": "accepted"},
        ],
        "extension": [
            {
                "url": VIRTUAL_SERVICE,
                "extension": [
                    {
                        "url": "channelType",
                        "valueCoding": {"system": CHANNEL_TYPES, "code": "jitsi"},
                    }
                ],
            }
        ],
    }
    created = http.post("/Appointment", json=appointment)
    assert created.status_code == 201, created.text
    path = f"/Appointment/{created.json()['id']}"

    def provisioned() -> dict[str, Any] | None:
        current: dict[str, Any] = http.get(path).json()
        service = virtual_service(current)
        return current if service is not None and service.meeting_code else None

    return Visit(eventually(provisioned, f"{path} gets a meeting code"))


def join(visit: Visit) -> None:
    """The patient enters the waiting room by the join address (the join page's POST)."""
    service = virtual_service(visit.appointment)
    assert service is not None and service.address is not None
    answer = httpx.post(service.address, json={"name": "Pat"}, timeout=10.0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "waiting"


def start(http: httpx.Client, visit: Visit) -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "practitioner", "valueReference": {"reference": "Practitioner/dr-one"}}
        ],
    }
    answer = http.post(
        f"/Appointment/{visit.appointment['id']}/$start-virtual-visit", json=parameters
    )
    assert answer.status_code == 200, answer.text
    found = {p["name"]: p.get("resource") for p in answer.json()["parameter"]}
    visit.encounter = found["encounter"]


def activated(http: httpx.Client, subscription_id: str) -> None:
    def active() -> bool | None:
        return http.get(f"/Subscription/{subscription_id}").json()["status"] == "active" or None

    eventually(active, f"Subscription/{subscription_id} becomes active")


async def test_a_front_desk_follows_its_clinic_over_rest_hook_and_websocket(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    # A fixed free port, not --port 0: the server's base URL (notification focus, join
    # addresses) is built from the configured port.
    port = free_port()
    server = launch("--port", str(port), store=tmp_path / "fhir.sqlite", port_flag=False)
    base = server.base
    with http_client(base) as http:
        for kind, resource_id in [
            ("Patient", "pat-a1"),
            ("Patient", "pat-a2"),
            ("Patient", "pat-b1"),
            ("Practitioner", "dr-one"),
            ("Location", "clinic-a"),
            ("Location", "clinic-b"),
        ]:
            put = http.put(f"/{kind}/{resource_id}", json={"resourceType": kind, "id": resource_id})
            assert put.status_code == 201, put.text

        # The front desk's subscriptions: clinic A only.
        hook = {"type": "rest-hook", "endpoint": url + "/waiting"}
        waiting = http.post(
            "/Subscription",
            json=front_desk("patient-waiting", hook, "Appointment?location=Location/clinic-a"),
        )
        assert waiting.status_code == 201, waiting.text
        hook = {"type": "rest-hook", "endpoint": url + "/started"}
        started = http.post(
            "/Subscription",
            json=front_desk("visit-started", hook, "Encounter?location=Location/clinic-a"),
        )
        assert started.status_code == 201, started.text
        ended = http.post(
            "/Subscription",
            json=front_desk(
                "visit-ended", {"type": "websocket"}, "Encounter?location=Location/clinic-a"
            ),
        )
        assert ended.status_code == 201, ended.text
        for created in (waiting, started):
            activated(http, created.json()["id"])

        # Handshakes first (Backport IG "Handshake"): nothing happened yet.
        for path in ("/waiting", "/started"):
            handshake = eventually(lambda p=path: received.at(p) or None, f"{path} handshake")
            assert [notification(b)[:2] for b in handshake] == [("handshake", 0)]

        # The websocket client binds to the visit-ended subscription.
        ended_id = ended.json()["id"]
        token_answer = http.get(f"/Subscription/{ended_id}/$get-ws-binding-token")
        assert token_answer.status_code == 200, token_answer.text
        outputs = {p["name"]: p for p in token_answer.json()["parameter"]}
        token = outputs["token"]["valueString"]
        ws_url = outputs["websocket-url"]["valueUrl"]
        async with connect(ws_url) as ws:
            await ws.send(f"bind-with-token {token}")
            kind, since, _, _ = notification(
                json.loads(await asyncio.wait_for(ws.recv(decode=True), WAIT))
            )
            assert (kind, since) == ("handshake", 0)

            # The day: clinic B's visit interleaved with clinic A's two.
            a1 = book(http, "Patient/pat-a1", "Location/clinic-a")
            b1 = book(http, "Patient/pat-b1", "Location/clinic-b")
            a2 = book(http, "Patient/pat-a2", "Location/clinic-a")
            join(b1)
            join(a1)
            join(a2)
            start(http, a1)
            start(http, b1)
            start(http, a2)
            for visit in (b1, a1):
                assert visit.encounter is not None
                done = http.post(f"/Encounter/{visit.encounter['id']}/$end-virtual-visit")
                assert done.status_code == 200, done.text

            # visit-ended over the websocket: clinic A's one ended visit, numbered 1.
            kind, since, focuses, carried = notification(
                json.loads(await asyncio.wait_for(ws.recv(decode=True), WAIT))
            )
            assert a1.encounter is not None
            assert (kind, since) == ("event-notification", 1)
            assert focuses == [f"{base}/Encounter/{a1.encounter['id']}"]
            assert [(r["id"], r["status"]) for r in carried] == [(a1.encounter["id"], "finished")]

        def events_at(path: str) -> list[dict[str, Any]] | None:
            found = received.at(path)
            return found if len(found) >= 3 else None

        waiting_bundles = eventually(lambda: events_at("/waiting"), "two patient-waiting events")
        started_bundles = eventually(lambda: events_at("/started"), "two visit-started events")
        await asyncio.sleep(QUIET)  # clinic B's visit must not arrive late either

    waiting_seen = [notification(b) for b in received.at("/waiting")]
    assert [(kind, since) for kind, since, _, _ in waiting_seen] == [
        ("handshake", 0),
        ("event-notification", 1),
        ("event-notification", 2),
    ]
    assert [focuses for _, _, focuses, _ in waiting_seen[1:]] == [
        [f"{base}/Appointment/{a1.appointment['id']}"],
        [f"{base}/Appointment/{a2.appointment['id']}"],
    ]
    assert [[(r["id"], r["status"]) for r in carried] for *_, carried in waiting_seen[1:]] == [
        [(a1.appointment["id"], "arrived")],
        [(a2.appointment["id"], "arrived")],
    ]
    assert len(waiting_bundles) == 3

    started_seen = [notification(b) for b in received.at("/started")]
    assert a2.encounter is not None
    assert [(kind, since, focuses) for kind, since, focuses, _ in started_seen] == [
        ("handshake", 0, []),
        ("event-notification", 1, [f"{base}/Encounter/{a1.encounter['id']}"]),
        ("event-notification", 2, [f"{base}/Encounter/{a2.encounter['id']}"]),
    ]
    assert [[r["status"] for r in carried] for *_, carried in started_seen[1:]] == [
        ["in-progress"],
        ["in-progress"],
    ]
    assert len(started_bundles) == 3
    server.kill()
