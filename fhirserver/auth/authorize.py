"""Who is calling the token, introspection or revocation endpoint (RFC 6749 section
2.3, SMART App Launch 2.2):

- `client_secret_basic` (RFC 6749 section 2.3.1: id and secret form-encoded, then in
  HTTP Basic) or `client_secret_post`, for confidential symmetric clients;
- `private_key_jwt` (RFC 7523 section 2.2, SMART client-confidential-asymmetric.html):
  `client_assertion_type` `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a
  signed `client_assertion`, for asymmetric clients, checked against the registered JWKS
  or the one at the registered URL;
- a bare `client_id` for public clients, which have nothing to prove.

A client must use the one method its registration says: a confidential client that
sends only its id is refused, as is a public client that sends a secret. More than one
method in a request is refused (RFC 6749 section 2.3: "MUST NOT use more than one").
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from joserfc import jws
from joserfc.errors import JoseError

from fhirserver.auth import registry
from fhirserver.auth.assertions import MAX_ASSERTION_CHARS, verify_client_assertion
from fhirserver.auth.errors import InvalidClient
from fhirserver.auth.oauth import invalid_client, invalid_request
from fhirserver.auth.passwords import verify_client_secret
from fhirserver.auth.server import AuthServer, JwksUnavailable

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_MAX_CLIENT_ID = 255


@dataclass(frozen=True)
class Authenticated:
    """The client, and how it proved it (`none` for a public client)."""

    client: registry.Client
    method: str


async def authenticate_client(
    server: AuthServer, form: Mapping[str, str], authorization: str | None
) -> Authenticated:
    """The registered client making this request, or `OAuthError` (`invalid_client`)."""
    basic = _basic_credentials(authorization)
    posted_secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    methods = [m for m in (basic, posted_secret, assertion) if m is not None]
    if len(methods) > 1:
        raise invalid_request("more than one client authentication method")
    if assertion is not None:
        return await _by_assertion(server, form, assertion)
    if basic is not None:
        client_id, secret = basic
        if form.get("client_id", client_id) != client_id:
            raise invalid_request("client_id does not match the Authorization header")
        return await _by_secret(server, client_id, secret, "client_secret_basic", basic=True)
    client_id = _client_id(form.get("client_id"))
    if posted_secret is not None:
        return await _by_secret(server, client_id, posted_secret, "client_secret_post")
    client = await _registered(server, client_id)
    if client.kind != "public":
        raise invalid_client("this client must authenticate", client_id)
    return Authenticated(client, "none")


def _client_id(value: str | None) -> str:
    if not value:
        raise invalid_client("client authentication is missing")
    if len(value) > _MAX_CLIENT_ID:
        raise invalid_client("unknown client")
    return value


async def _registered(server: AuthServer, client_id: str, basic: bool = False) -> registry.Client:
    client = await registry.get_client(server.store, client_id, server.clock())
    if client is None:
        raise invalid_client("unknown client", basic=basic)
    return client


async def _by_secret(
    server: AuthServer, client_id: str, secret: str, method: str, basic: bool = False
) -> Authenticated:
    client_id = _client_id(client_id)
    client = await _registered(server, client_id, basic)
    if client.kind != "symmetric" or client.secret_hash is None:
        raise invalid_client("this client does not authenticate with a secret", client_id, basic)
    if not verify_client_secret(secret, client.secret_hash):
        raise invalid_client("client authentication failed", client_id, basic)
    return Authenticated(client, method)


async def _by_assertion(
    server: AuthServer, form: Mapping[str, str], assertion: str
) -> Authenticated:
    if form.get("client_assertion_type") != JWT_BEARER:
        raise invalid_request("client_assertion_type must be " + JWT_BEARER)
    client_id = _client_id(form.get("client_id") or _unverified_issuer(assertion))
    client = await _registered(server, client_id)
    if client.kind != "asymmetric":
        raise invalid_client("this client does not authenticate with a signed assertion", client_id)
    jwks = client.jwks
    if jwks is None and client.jwks_url is not None:
        try:
            jwks = await server.fetch_jwks(client.jwks_url)
        except JwksUnavailable as error:
            raise invalid_client(f"client keys unavailable: {error}", client_id) from None
    store = server.store

    async def seen_before(jti: str, until: datetime) -> bool:
        return await registry.assertion_seen_before(store, client_id, jti, until, server.clock())

    try:
        await verify_client_assertion(
            assertion,
            client_id=client_id,
            jwks=jwks or {},
            token_url=server.urls.token,
            clock=server.clock,
            seen_before=seen_before,
        )
    except InvalidClient as error:
        raise invalid_client(error.reason, client_id) from None
    return Authenticated(client, "private_key_jwt")


def _unverified_issuer(assertion: str) -> str | None:
    """The `iss` an assertion claims, only to find whose keys to check it with; the
    signature check that follows decides."""
    if len(assertion) > MAX_ASSERTION_CHARS:
        return None
    try:
        claims = json.loads(jws.extract_compact(assertion.encode()).payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """client_secret_basic: `Basic base64(urlencode(id):urlencode(secret))`."""
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("malformed Basic credentials", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise invalid_client("malformed Basic credentials", basic=True)
    return unquote_plus(client_id), unquote_plus(secret)
