"""Where a rest-hook notification goes (R4 subscription.html, the rest-hook channel's
`channel.endpoint`; Backport IG 1.1.0 "Notifications"), within
FHIRSERVER_SUBSCRIPTION_ALLOWED_HOSTS (issue 15 "Safety").

The endpoint's name is resolved once per connection and the connection goes to the
address that was checked, so a name that resolves to an allowed address for the check
and to another one for the connection (DNS rebinding) reaches only the first. And the
addresses no notification has business with (link-local, cloud metadata at
169.254.169.254; unspecified; multicast) are refused even under `*`, unless the list
names them.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterable

import httpcore
import httpx
import pytest

from fhirserver.subscriptions.context import SubscriptionContext, delivery_client
from fhirserver.subscriptions.delivery import DeliveryFailed, post
from fhirserver.subscriptions.endpoints import AllowedHosts, EndpointRefused, check_endpoint
from fhirserver.subscriptions.model import read_subscription
from fhirserver.subscriptions.transport import DeliveryTransport
from tests.subscriptions.conftest import Harness, criteria_subscription


class Rebinding:
    """A resolver answering `first` on its first lookup and `then` on every later one."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return [self.answers[0] if len(self.lookups) == 1 else self.answers[1]]


def _context(harness: Harness, allowed: str, resolve: Rebinding) -> SubscriptionContext:
    """The app's subscription context, with this list and this resolver."""
    context: SubscriptionContext = harness.app.state.subscriptions
    settings = dataclasses.replace(context.settings, allowed=AllowedHosts.parse(allowed))
    return dataclasses.replace(context, settings=settings, http=delivery_client(settings, resolve))


async def _deliver(context: SubscriptionContext, endpoint: str) -> str | None:
    """One delivery to `endpoint`; why it failed, or None."""
    spec = read_subscription({"id": "s1", **criteria_subscription(endpoint, "Patient?")})
    try:
        await post(context, spec, "POST", endpoint, None)
    except DeliveryFailed as exc:
        return str(exc)
    finally:
        await context.http.aclose()
    return None


async def test_the_connection_goes_to_the_address_checked(harness: Harness) -> None:
    # Only the injected resolver knows this name: the connection must use its answer.
    port = harness.receiver.url.rsplit(":", 1)[1]
    resolve = Rebinding("127.0.0.1", "10.255.255.1")
    context = _context(harness, "127.0.0.1", resolve)
    assert await _deliver(context, f"http://hooks.rebind.test:{port}/hook") is None
    [received] = harness.receiver.received
    # The request is for the endpoint's name, whatever address it went to.
    assert received.headers["host"] == f"hooks.rebind.test:{port}"
    assert received.path == "/hook"
    assert resolve.lookups == ["hooks.rebind.test"]


async def test_a_name_rebound_after_the_check_is_not_followed(harness: Harness) -> None:
    # Allowed: 127.0.0.2 (the first answer); the receiver listens on 127.0.0.1 (the
    # second answer, and what the system resolver says `localhost` is).
    port = harness.receiver.url.rsplit(":", 1)[1]
    resolve = Rebinding("127.0.0.2", "127.0.0.1")
    context = _context(harness, "127.0.0.2", resolve)
    failed = await _deliver(context, f"http://localhost:{port}/")
    assert harness.receiver.received == []
    assert failed is not None


async def test_a_loopback_receiver_gets_deliveries_under_the_default_list(
    harness: Harness,
) -> None:
    context: SubscriptionContext = harness.app.state.subscriptions
    assert await _deliver(context, harness.receiver.url) is None
    assert len(harness.receiver.received) == 1


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://0.0.0.0:8080/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1%25eth0]/",
        # NAT64's well-known prefix and 6to4 carry the metadata address too (RFC 6052,
        # RFC 3056); a local-use NAT64 prefix places it by prefix length.
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b::169.254.169.254]/",
        "http://[2002:a9fe:a9fe::1]/",
        "http://[64:ff9b:1::a9fe:a9fe]/",
    ],
)
async def test_link_local_unspecified_and_multicast_are_refused_under_star(
    harness: Harness, endpoint: str
) -> None:
    created = await harness.http.post(
        "/Subscription", json=criteria_subscription(endpoint, "Patient?")
    )
    assert created.status_code == 422, created.text
    assert created.json()["resourceType"] == "OperationOutcome"


async def test_a_name_resolving_to_the_metadata_service_is_refused_under_star(
    harness: Harness,
) -> None:
    resolve = Rebinding("169.254.169.254", "169.254.169.254")
    failed = await _deliver(_context(harness, "*", resolve), "http://hooks.example.org/")
    assert failed == "notifications may not go to hooks.example.org"
    # A host name entry does not name the address either.
    resolve = Rebinding("169.254.169.254", "169.254.169.254")
    context = _context(harness, "hooks.example.org", resolve)
    assert await _deliver(context, "http://hooks.example.org/") == failed


async def test_a_listed_link_local_address_is_allowed(harness: Harness) -> None:
    allowed = AllowedHosts.parse("*, 169.254.169.254")
    check_endpoint("http://169.254.169.254/hook", allowed)
    check_endpoint("http://[::ffff:169.254.169.254]/hook", AllowedHosts.parse("169.254.0.0/16"))
    with pytest.raises(EndpointRefused):
        check_endpoint("http://169.254.169.253/hook", allowed)
    assert allowed.admits("metadata.internal", ["169.254.169.254"])
    assert not allowed.admits("metadata.internal", ["169.254.169.254", "169.254.0.1"])


class Recorded(httpcore.AsyncMockStream):
    """A connection answering 200, noting the TLS server name it was asked for."""

    def __init__(self, names: list[str]) -> None:
        super().__init__([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
        self.names = names

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        self.names.append(str(server_hostname))
        return self


class Network(httpcore.AsyncMockBackend):
    """Connections that go nowhere, noting the address each was opened to."""

    def __init__(self) -> None:
        super().__init__([])
        self.connected: list[str] = []
        self.server_names: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(f"{host}:{port}")
        return Recorded(self.server_names)


async def test_tls_is_for_the_endpoint_name_while_connecting_to_the_checked_address() -> None:
    network = Network()
    resolve = Rebinding("203.0.113.7", "10.0.0.1")
    transport = DeliveryTransport(AllowedHosts.parse("*"), resolve, network)
    async with httpx.AsyncClient(transport=transport) as http:
        answer = await http.post("https://hooks.example.org/hook", content=b"{}")
    assert answer.status_code == 200
    assert network.connected == ["203.0.113.7:443"]
    # The certificate is verified against the name (the server name TLS asks for).
    assert network.server_names == ["hooks.example.org"]
