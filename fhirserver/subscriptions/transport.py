"""The delivery client's connections (issue 15 "Safety"): each goes to an address the
allowed-hosts check passed, resolved once for that connection, so an endpoint name
that answers one address to the check and another to the connection (DNS rebinding)
cannot send a notification anywhere the list does not allow.

The pinning is an httpcore network backend (httpcore's extension point for how
connections are opened): it resolves, checks and connects to a checked address. The
request is unchanged above it: httpcore still sends the endpoint's name as the Host
header and the TLS server name, and verifies the certificate against that name.
`DeliveryTransport` is the httpx transport over such a connection pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

from fhirserver.subscriptions.endpoints import AllowedHosts, Resolver, checked_addresses

# httpx's own defaults for its transport (httpcore's would keep connections for ever).
MAX_CONNECTIONS = 100
MAX_KEEPALIVE = 20
KEEPALIVE_SECONDS = 5.0

# httpcore's errors as the httpx ones a client of httpx catches (httpx does the same
# in its own transport).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)
_CORE_ERRORS = tuple(core for core, _ in _ERRORS)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens a connection to `host` only at an address the allowed hosts admit, the
    one the check resolved (EndpointRefused otherwise)."""

    def __init__(
        self,
        allowed: AllowedHosts,
        resolve: Resolver,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allowed = allowed
        self._resolve = resolve
        self._network = network or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await checked_addresses(host, port, self._allowed, self._resolve)
        failed: Exception | None = None
        # Each checked address in turn, as a resolving connect would try them.
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failed = exc
        assert failed is not None  # checked_addresses never answers an empty list
        raise failed

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


@contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except _CORE_ERRORS as exc:
        mapped = next(ours for core, ours in _ERRORS if isinstance(exc, core))
        raise mapped(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        closing = getattr(self._stream, "aclose", None)
        if closing is not None:
            with _as_httpx(self._request):
                await closing()


class DeliveryTransport(httpx.AsyncBaseTransport):
    """httpx over a connection pool whose connections are pinned (PinnedBackend).
    No proxy: a proxy would resolve the name itself (and httpx does not apply the
    environment's proxies to a client given its transport)."""

    def __init__(
        self,
        allowed: AllowedHosts,
        resolve: Resolver,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_SECONDS,
            network_backend=PinnedBackend(allowed, resolve, network),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, AsyncIterable)
        url = httpcore.URL(
            scheme=request.url.raw_scheme,
            host=request.url.raw_host,
            port=request.url.port,
            target=request.url.raw_path,
        )
        sent = httpcore.Request(
            request.method,
            url,
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(request):
            answer = await self._pool.handle_async_request(sent)
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=_Body(answer.stream, request),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
