"""Which peers' forwarded headers are believed (README "Scale-out"; issue 20 point 3).

Only a peer in FHIRSERVER_TRUSTED_PROXIES may say, with X-Forwarded-For and
X-Forwarded-Proto, who the client is and which scheme it used; from anyone else the
headers are ignored, so a client cannot forge another address (a fresh rate limit, a
false audit address) or the base URL's scheme. The decision is made once, in the app,
for everything that reads `request.client` and `request.url` (rate limits, audit
events, the access log, the base URL): `fhirserver serve` turns uvicorn's own handling
off (cli.server_config), which by default trusts 127.0.0.1.

uvicorn's ProxyHeadersMiddleware does the work: through a chain of trusted proxies the
client is the right-most X-Forwarded-For address that is not itself a trusted proxy,
as nginx's `real_ip_recursive on` takes it. `Forwarded` (RFC 7239) and
X-Forwarded-Host are read by nothing here (the base URL's host is the request's Host,
or FHIRSERVER_PUBLIC_URL), so they are never believed.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from fhirserver.config import Settings


def proxy_middleware(settings: Settings) -> list[Middleware]:
    """The middleware that believes the trusted proxies' headers; none when none are
    trusted."""
    trusted = [str(network) for network in settings.proxy_networks]
    if not trusted:
        return []
    return [Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)]
