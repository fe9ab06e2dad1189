"""The identity provider's URLs in external mode: https only, and safe to show.

Keys, discovery and introspection answers decide who may read patient records, so
they travel over TLS (RFC 7662 section 4: "MUST" for introspection; OpenID Connect
Discovery section 7 for the discovery document and `jwks_uri`). Plain http is allowed
for a loopback host only, where nothing crosses a network (tests, a local IdP).

A URL may carry a secret (user info, a query string): what goes into a message or a
log is `shown(url)`, scheme, host, port and path only.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost"})


def secure_url(url: str, name: str) -> str:
    """`url` when it may be used to reach the identity provider; otherwise a
    ValueError naming the setting (`name`) and what is wrong, never the URL itself."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as error:
        raise ValueError(f"{name} is not a valid URL") from error
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{name} must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{name} must not carry credentials in the URL")
    if parts.fragment:
        raise ValueError(f"{name} must not have a #fragment")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise ValueError(
            f"{name} must be an https:// URL (plain http:// is allowed for a loopback host only)"
        )
    return url


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: addresses that never leave the machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def shown(url: str) -> str:
    """`url` without user info, query or fragment: what a log line may say."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"
