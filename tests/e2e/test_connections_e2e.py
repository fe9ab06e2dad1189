"""Issue 20, finding 5: connections one client cannot hog, over a real `fhirserver serve`.

Raw sockets on loopback: half-sent headers are cut off at the header deadline, a stalled
body is answered 408 (an OperationOutcome) at the body deadline, connections past the
cap per client address are refused with 503 while another address is served, and a
client that disconnects mid-upload costs one log line, not a traceback.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.test_serve import Launch, Server, launch  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

LIMITS = {
    "FHIRSERVER_HEADER_TIMEOUT_SECONDS": "1",
    "FHIRSERVER_BODY_TIMEOUT_SECONDS": "1",
    "FHIRSERVER_MAX_CONNECTIONS_PER_CLIENT": "4",
    "FHIRSERVER_LOG_LEVEL": "info",
}


def address(server: Server) -> tuple[str, int]:
    host, port = server.base.split("//")[1].split("/")[0].split(":")
    return host, int(port)


def connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(address(server))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s pass)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def read_response(sock: socket.socket) -> bytes:
    """One whole answer on a keep-alive connection (head and Content-Length body)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed by the server after {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed by the server mid-answer"
        body += chunk
    return head


def part_of_a_post(length: int, start: bytes) -> bytes:
    """The head of a POST announcing `length` bytes of body, and its first bytes."""
    head = (
        "POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    return head.encode() + start


def get(path: str) -> bytes:
    return f"GET /fhir{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


@pytest.fixture
def server(launch: Launch, tmp_path: Path) -> Server:  # noqa: F811 - the fixture
    return launch(store=tmp_path / "fhir.sqlite", env=LIMITS)


def test_half_sent_headers_are_cut_off(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    assert read_all(sock) == b""
    assert time.monotonic() - started < 5
    # A keep-alive connection's next request is held to the same deadline.
    sock = connect(server)
    sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\n")
    started = time.monotonic()
    while sock.recv(65536):
        pass
    assert time.monotonic() - started < 5


def test_a_stalled_body_is_answered_408(server: Server) -> None:
    sock = connect(server)
    sock.sendall(part_of_a_post(1000, b'{"resourceType"'))
    started = time.monotonic()
    answer = read_all(sock)
    assert time.monotonic() - started < 5
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout", answer[:200]
    outcome = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert outcome["issue"][0]["code"] == "timeout"
    assert "1 s" in outcome["issue"][0]["diagnostics"]


def test_connections_past_the_cap_are_refused_per_address(server: Server) -> None:
    held = [connect(server) for _ in range(4)]
    for sock in held:
        sock.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    extra = connect(server)
    extra.sendall(get("/metadata"))
    refused = read_all(extra)
    assert refused.startswith(b"HTTP/1.1 503"), refused[:100]
    assert b"Too many open connections" in refused
    # Another address is served meanwhile (all of 127/8 reaches loopback on Linux).
    other = connect(server, source="127.0.0.2")
    other.sendall(get("/metadata"))
    assert read_all(other).startswith(b"HTTP/1.1 200")
    # A closed connection frees its place.
    held.pop().close()
    time.sleep(0.3)
    again = connect(server)
    again.sendall(get("/metadata"))
    assert read_all(again).startswith(b"HTTP/1.1 200")
    for sock in held:
        sock.close()


def test_a_client_gone_mid_upload_is_one_log_line(server: Server) -> None:
    sock = connect(server)
    sock.sendall(part_of_a_post(100_000, b'{"resourceType": "Patient", '))
    time.sleep(0.3)
    sock.close()
    time.sleep(1.0)
    log = server.stderr()
    assert "Traceback" not in log, log
    gone = [line for line in log.splitlines() if "disconnected" in line]
    assert len(gone) == 1, log
    assert "127.0.0.1" in gone[0] and "POST /fhir/Patient" in gone[0]


def test_an_idle_keep_alive_connection_waits_for_its_next_request(server: Server) -> None:
    """The header deadline runs from a request's first byte, not from the last answer:
    idle time is the keep-alive's (longer than HTTP clients' pool expiry, 5 s for httpx,
    so a pooled connection is never closed under a request being sent on it)."""
    sock = connect(server)
    for _ in range(2):
        sock.sendall(b"GET /fhir/Patient/absent HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 404")
        time.sleep(2.5)  # past the header deadline (1 s)
    sock.sendall(get("/Patient/absent"))
    assert read_all(sock).startswith(b"HTTP/1.1 404")


def upgrade(sock: socket.socket) -> bytes:
    """Ask for the subscription websocket; the first bytes of the answer."""
    sock.sendall(
        b"GET /fhir/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    return sock.recv(65536)


def test_websockets_count_while_open_and_free_their_place_when_closed(server: Server) -> None:
    held = [connect(server) for _ in range(4)]
    for sock in held:
        assert upgrade(sock).startswith(b"HTTP/1.1 101")
    extra = connect(server)
    extra.sendall(get("/metadata"))
    assert read_all(extra).startswith(b"HTTP/1.1 503")
    for sock in held:
        sock.close()
    time.sleep(0.3)
    # Closed websockets hold no place: a client may open and close many over time.
    for _ in range(6):
        sock = connect(server)
        assert upgrade(sock).startswith(b"HTTP/1.1 101")
        sock.close()
    time.sleep(0.3)
    again = connect(server)
    again.sendall(get("/metadata"))
    assert read_all(again).startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    """Two requests sent at once on a connection (RFC 9112 §9.3.2): both answered, in
    order; then a request whose headers come in two parts, within the deadline, is
    answered too."""
    sock = connect(server)
    sock.sendall(
        b"GET /fhir/Patient/absent HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert read_response(sock).startswith(b"HTTP/1.1 404")
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    # A third request begun after the answers, and finished 0.5 s later (deadline 1 s).
    sock.sendall(b"GET /fhir/Patient/absent HTTP/1.1\r\n")
    time.sleep(0.5)
    sock.sendall(b"Host: x\r\n\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 404")


def test_a_request_begun_behind_a_slow_answer_keeps_its_connection(server: Server) -> None:
    """A pipelined request's first bytes arrive while the request before it, a large
    transaction, takes longer than the header deadline to answer. The answer is not
    cut short, and the next request's headers get the whole deadline once it is out."""
    patient = {"resourceType": "Patient", "name": [{"family": "Pipelined"}]}
    entries = [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}] * 10_000
    bundle = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    sock = connect(server)
    sent = time.monotonic()
    sock.sendall(
        "POST /fhir HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(bundle)}\r\n\r\n{bundle}"
        "GET /fhir/metadata HTTP/1.1\r\n".encode()
    )
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    # Else the deadline (1 s) never came round while the answer was being made.
    assert time.monotonic() - sent > 1.2, "the transaction was answered too soon to test"
    # The rest of the headers a little later: within a deadline begun with the answer
    # out, wherever a deadline begun with the request would have come round.
    time.sleep(0.5)
    sock.sendall(b"Host: x\r\n\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 200")
