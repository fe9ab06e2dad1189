"""The built-in SMART authorization server over HTTP, beside the FHIR base:

- `GET [base]/.well-known/smart-configuration` (SMART conformance.html), public, in
  `smart` and `external` mode;
- `POST /auth/token` (RFC 6749 section 3.2), `POST /auth/introspect` (RFC 7662),
  `POST /auth/revoke` (RFC 7009), `GET /auth/jwks` (RFC 7517), in `smart` mode.

Requests are `application/x-www-form-urlencoded` with each parameter at most once
(RFC 6749 section 3.2); answers are JSON with `Cache-Control: no-store` (section 5.1),
errors in section 5.2's shape. The protocol is in `fhirserver.auth`; here are only
HTTP, the per-address rate limit and the AuditEvent of each token request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fhirserver.auth.audit import token_audit_event
from fhirserver.auth.discovery import external_configuration, smart_configuration
from fhirserver.auth.external import ExternalAuthenticator
from fhirserver.auth.introspection import INACTIVE, introspect, introspection_caller, revoke
from fhirserver.auth.keys import public_jwks
from fhirserver.auth.oauth import OAuthError, invalid_request
from fhirserver.auth.server import AuthServer
from fhirserver.auth.token_grants import GRANT_TYPES, token_request
from fhirserver.auth.urls import AUTH_PATH, WELL_KNOWN
from fhirserver.config import Settings
from fhirserver.interactions import crud
from fhirserver.interactions.capabilities import OAuthUris
from fhirserver.interactions.rules import WriteContext
from fhirserver.rest.negotiation import FORM, media_type, read_body
from fhirserver.rest.ratelimit import RateLimit, client_key
from fhirserver.storage.retry import run_unit

# Per client address: enough for any honest client, slow for guessing secrets or codes.
TOKEN_RATE_PER_MINUTE = 60
TOKEN_BURST = 20
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 32 * 1024


def smart_routes(base_path: str, auth_mode: str) -> list[Route]:
    """The routes of `auth_mode`: none when off."""
    if auth_mode not in ("smart", "external"):
        return []
    found = [_route(base_path + WELL_KNOWN, "GET", discovery)]
    if auth_mode == "smart":
        found += [
            _route(AUTH_PATH + "/token", "POST", token),
            _route(AUTH_PATH + "/introspect", "POST", introspection),
            _route(AUTH_PATH + "/revoke", "POST", revocation),
            _route(AUTH_PATH + "/jwks", "GET", jwks),
        ]
    return found


def _route(path: str, method: str, handler: Callable[[Request], Awaitable[Response]]) -> Route:
    """Every method reaches the route, so that a wrong one is 405 rather than falling
    through to the 404 of paths outside the FHIR base."""

    async def endpoint(request: Request) -> Response:
        if request.method == method or (method == "GET" and request.method == "HEAD"):
            return await handler(request)
        return JSONResponse(
            {"error": "invalid_request", "error_description": f"use {method}"},
            status_code=405,
            headers={"Allow": method},
        )

    return Route(path, endpoint, methods=_ALL_METHODS)


def token_rate_limit() -> RateLimit:
    return RateLimit(TOKEN_RATE_PER_MINUTE, burst=TOKEN_BURST)


def oauth_uris(settings: Settings, server: AuthServer | None) -> OAuthUris | None:
    """What the CapabilityStatement says about authorization (None when off)."""
    if server is not None:
        urls = server.urls
        return OAuthUris(urls.authorize, urls.token, urls.introspect, urls.revoke)
    if settings.auth_mode == "external":
        issuer = settings.auth_issuer or "an external issuer"
        return OAuthUris(
            None,
            None,
            settings.auth_introspection_url or None,
            description=f"OAuth2 bearer tokens issued by {issuer}",
        )
    return None


def _server(request: Request) -> AuthServer:
    server: AuthServer = request.app.state.auth_server
    return server


async def discovery(request: Request) -> Response:
    server: AuthServer | None = request.app.state.auth_server
    if server is not None:
        document = smart_configuration(server.urls)
    else:
        authenticator = request.app.state.authenticator
        metadata = None
        if isinstance(authenticator, ExternalAuthenticator):
            metadata = await authenticator.issuer_metadata()
        document = external_configuration(request.app.state.settings, metadata)
    return JSONResponse(document)


async def jwks(request: Request) -> Response:
    server = _server(request)
    keys = await server.signing_keys()
    # Short-lived in caches: a rotation must reach resource servers within the grace.
    return JSONResponse(
        public_jwks(keys, server.clock), headers={"Cache-Control": "public, max-age=300"}
    )


async def token(request: Request) -> Response:
    server = _server(request)
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    address = _address(request)
    form: dict[str, str] = {}
    try:
        form = await _form(request)
        issued = await token_request(server, form, request.headers.get("authorization"))
    except OAuthError as error:
        await _audit(
            request,
            token_audit_event(
                at=server.clock(),
                issuer=server.urls.issuer,
                grant_type=_grant_type(form),
                client_id=error.client_id,
                address=address,
                refusal=f"{error.error}: {error.description}",
            ),
        )
        return _oauth_error(error)
    await _audit(
        request,
        token_audit_event(
            at=server.clock(),
            issuer=server.urls.issuer,
            grant_type=issued.grant_type,
            client_id=issued.access.client_id,
            address=address,
            user=issued.access.user,
            token_id=issued.access.token_id,
        ),
    )
    return JSONResponse(issued.body, headers=_NO_STORE)


async def introspection(request: Request) -> Response:
    server = _server(request)
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    try:
        form = await _form(request)
        own_only = await introspection_caller(server, form, request.headers.get("authorization"))
        answer: dict[str, Any] = await introspect(server, form)
        if own_only is not None and answer.get("client_id") != own_only:
            answer = {}
    except OAuthError as error:
        return _oauth_error(error)
    return JSONResponse(answer or INACTIVE, headers=_NO_STORE)


async def revocation(request: Request) -> Response:
    server = _server(request)
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    try:
        form = await _form(request)
        await revoke(server, form, request.headers.get("authorization"))
    except OAuthError as error:
        return _oauth_error(error)
    return Response(status_code=200, headers=_NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    if media_type(request) != FORM:
        raise invalid_request(f"the request body must be {FORM}")
    raw = await read_body(request, _MAX_FORM_BYTES)
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise invalid_request("the form cannot be read") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request("a parameter is repeated")
        form[name] = value
    return form


def _grant_type(form: dict[str, str]) -> str:
    """The grant type for the audit trail: only the names this server knows."""
    grant_type = form.get("grant_type", "")
    return grant_type if grant_type in GRANT_TYPES else "unsupported"


def _oauth_error(error: OAuthError) -> Response:
    return JSONResponse(
        error.body(), status_code=error.status, headers={**_NO_STORE, **error.headers}
    )


def _rate_limited(request: Request) -> Response | None:
    limit: RateLimit = request.app.state.token_limit
    wait = limit.take(client_key(request))
    if not wait:
        return None
    return JSONResponse(
        {"error": "temporarily_unavailable", "error_description": "too many requests"},
        status_code=429,
        headers={**_NO_STORE, "Retry-After": RateLimit.retry_after(wait)},
    )


def _address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _audit(request: Request, event: dict[str, Any]) -> None:
    """Write the AuditEvent as the server (a FHIR resource any authorized client can
    search, like the telehealth events)."""
    writes: WriteContext = request.app.state.writes
    await run_unit(
        request.app.state.store, lambda unit: crud.write_new(unit, writes.as_server(), event)
    )
