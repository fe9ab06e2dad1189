"""Where the identity provider's keys and introspection endpoint are.

Either configured (`FHIRSERVER_AUTH_JWKS_URL`, `FHIRSERVER_AUTH_INTROSPECTION_URL`)
or found by OpenID Connect Discovery 1.0 from `FHIRSERVER_AUTH_ISSUER`: section 4 (the
document is at `{issuer}/.well-known/openid-configuration`, a trailing `/` of the
issuer removed first), section 4.3 (its `issuer` MUST be identical to the issuer it
was fetched for, or it is not to be used), section 3 (`jwks_uri`) and RFC 8414
section 2 (`introspection_endpoint`). A configured URL wins over a discovered one.
Every URL, configured or discovered, must be https (`external_urls.secure_url`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from fhirserver.auth.external_fetch import IdPUnavailable, fetch_json
from fhirserver.auth.external_urls import secure_url, shown
from fhirserver.config import Settings

logger = logging.getLogger("fhirserver.auth")

DISCOVERY_PATH = "/.well-known/openid-configuration"
ISSUER = "FHIRSERVER_AUTH_ISSUER"
JWKS_URL = "FHIRSERVER_AUTH_JWKS_URL"
INTROSPECTION_URL = "FHIRSERVER_AUTH_INTROSPECTION_URL"


@dataclass(frozen=True)
class Endpoints:
    """The key set's URL, and the introspection endpoint's ("" when there is none)."""

    jwks_url: str
    introspection_url: str = ""
    # The issuer's OpenID discovery document, when it was read: the SMART discovery
    # document names its authorize and token endpoints (rest/smart.py).
    metadata: Mapping[str, Any] = field(default_factory=dict)


class DiscoveryMismatch(IdPUnavailable):
    """The discovery document is for another issuer (OIDC Discovery section 4.3):
    nothing in it may be used."""


def check_settings(settings: Settings) -> None:
    """Refuse, at start-up, settings external mode cannot work with: no issuer and no
    key set, a URL that is not https (except on loopback), introspection without the
    credentials RFC 7662 section 2.1 requires of its caller."""
    if not (settings.auth_issuer or settings.auth_jwks_url):
        raise ValueError(f"FHIRSERVER_AUTH=external needs {ISSUER} or {JWKS_URL}")
    if settings.auth_issuer:
        secure_url(settings.auth_issuer, ISSUER)
    if settings.auth_jwks_url:
        secure_url(settings.auth_jwks_url, JWKS_URL)
    if settings.auth_introspection_url:
        secure_url(settings.auth_introspection_url, INTROSPECTION_URL)
        if not (
            settings.auth_introspection_client_id and settings.auth_introspection_client_secret
        ):
            raise ValueError(
                f"{INTROSPECTION_URL} needs FHIRSERVER_AUTH_INTROSPECTION_CLIENT_ID and "
                "FHIRSERVER_AUTH_INTROSPECTION_CLIENT_SECRET (RFC 7662 section 2.1: the "
                "introspection endpoint authenticates its caller)"
            )


def configured_endpoints(settings: Settings) -> Endpoints | None:
    """The endpoints when the settings name the key set; None when they must be
    discovered from the issuer."""
    if not settings.auth_jwks_url:
        return None
    return Endpoints(settings.auth_jwks_url, settings.auth_introspection_url)


async def discover_endpoints(settings: Settings, http: httpx.AsyncClient) -> Endpoints:
    """The endpoints the issuer's OpenID discovery document names, configured ones
    first. Raises `IdPUnavailable` when the document cannot be had or is not the
    issuer's own."""
    issuer = settings.auth_issuer
    url = issuer.rstrip("/") + DISCOVERY_PATH
    document = (await fetch_json(http, "GET", url)).body
    if document.get("issuer") != issuer:
        logger.error(
            "the OpenID discovery document at %s names another issuer than %s; "
            "set %s to exactly the issuer the identity provider puts in its tokens",
            shown(url),
            ISSUER,
            ISSUER,
        )
        raise DiscoveryMismatch()
    jwks_url = settings.auth_jwks_url or _discovered(document, "jwks_uri", url)
    introspection = settings.auth_introspection_url
    if not introspection and document.get("introspection_endpoint"):
        if settings.auth_introspection_client_id and settings.auth_introspection_client_secret:
            introspection = _discovered(document, "introspection_endpoint", url)
        else:
            logger.info(
                "the identity provider offers token introspection; opaque tokens stay "
                "refused until FHIRSERVER_AUTH_INTROSPECTION_CLIENT_ID and _SECRET are set"
            )
    return Endpoints(jwks_url, introspection, document)


def _discovered(document: dict[str, object], member: str, url: str) -> str:
    value = document.get(member)
    try:
        if not isinstance(value, str):
            raise ValueError(f"no {member}")
        return secure_url(value, f"{member} in the discovery document")
    except ValueError as error:
        logger.error("the OpenID discovery document at %s: %s", shown(url), error)
        raise IdPUnavailable() from None
