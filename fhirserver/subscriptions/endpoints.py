"""Where notifications may go (issue 15 "Safety"): `http(s)` endpoints only, on the
hosts `FHIRSERVER_SUBSCRIPTION_ALLOWED_HOSTS` lists, checked when a Subscription is
written and again, after DNS resolution, on every connection to the endpoint
(transport.py connects to the addresses checked here).

An entry of the list is `*` (anywhere), a host name (`hooks.example.org`), a name
pattern (`*.example.org`), an address (`10.0.0.5`) or a network (`10.0.0.0/8`). A
host name entry allows that name; an address or network entry allows an endpoint
whose name resolves only to addresses inside the listed ones.

Link-local addresses (169.254.0.0/16, fe80::/10), the unspecified ones (0.0.0.0, ::)
and multicast are refused whatever the list says, unless an address or network entry
contains them: cloud metadata services answer at 169.254.169.254 (the first target of
server-side request forgery), 0.0.0.0 reaches this very host, and no notification
endpoint is a multicast group. Loopback and private addresses stay allowed by `*`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class EndpointRefused(Exception):
    """The endpoint is not one notifications may go to; the message says why."""


@dataclass(frozen=True)
class AllowedHosts:
    anywhere: bool
    names: tuple[str, ...]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        names: list[str] = []
        networks: list[IPNetwork] = []
        entries = [e.strip().lower() for e in text.split(",") if e.strip()]
        for entry in entries:
            if entry == "*":
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.append(entry)
        return cls("*" in entries, tuple(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return self.anywhere or any(
            host == name or (name.startswith("*.") and host.endswith(name[1:]))
            for name in self.names
        )

    def admits(self, host: str, addresses: list[str]) -> bool:
        """Whether an endpoint named `host`, resolved to `addresses`, may be reached."""
        if not addresses:
            return False
        parsed = [_address(a) for a in addresses]
        listed = [any(a in network for network in self.networks) for a in parsed]
        if any(_unlisted_only(a) and not inside for a, inside in zip(parsed, listed, strict=True)):
            return False
        return self.allows_name(host) or all(listed)


# NAT64 (RFC 6052): the well-known prefix carries an IPv4 address in its last 32 bits;
# a local-use prefix places it by prefix length, so its addresses are judged unknown.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _address(text: str) -> IPAddress:
    """An address as the checks see it: no IPv6 zone, and an IPv6 address that carries
    an IPv4 one (IPv4-mapped, NAT64's well-known prefix, 6to4) as the IPv4 address it
    reaches: ::ffff:169.254.169.254 and 64:ff9b::a9fe:a9fe are the metadata service."""
    address = ipaddress.ip_address(text.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _unlisted_only(address: IPAddress) -> bool:
    """Addresses `*` and host name entries never allow (the module docstring says why)."""
    return (
        address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address in _NAT64_LOCAL
    )


def endpoint_host(url: str) -> tuple[str, int]:
    """The host and port of an `http(s)` URL; EndpointRefused for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EndpointRefused(f"the endpoint {url!r} is not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointRefused("the endpoint must be an http or https URL")
    if not parts.hostname:
        raise EndpointRefused("the endpoint has no host")
    if parts.username or parts.password:
        raise EndpointRefused("the endpoint may not carry credentials in the URL")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check_endpoint(url: str, allowed: AllowedHosts) -> None:
    """When the Subscription is written: the scheme, and the host if the list names it
    (an address or network entry is only decided after resolution, at delivery)."""
    host, _ = endpoint_host(url)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A name that may resolve into an allowed network is checked at delivery.
        if allowed.allows_name(host) or allowed.networks:
            return
        raise EndpointRefused(f"notifications may not go to {host}") from None
    if not allowed.admits(host, [host]):
        raise EndpointRefused(f"notifications may not go to {host}")


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def checked_addresses(
    host: str, port: int, allowed: AllowedHosts, resolve: Resolver
) -> list[str]:
    """The addresses of `host`, resolved now, which a connection may go to; raises
    EndpointRefused if the endpoint may not be reached."""
    try:
        addresses = await resolve(host, port)
    except OSError:
        raise EndpointRefused(f"the endpoint host {host} does not resolve") from None
    if not addresses:
        raise EndpointRefused(f"the endpoint host {host} does not resolve")
    if not allowed.admits(host, addresses):
        raise EndpointRefused(f"notifications may not go to {host}")
    return addresses
