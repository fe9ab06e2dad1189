"""Token introspection (RFC 7662) and revocation (RFC 7009) for the built-in server.

Introspection is for resource servers and clients that hold a credential: the caller
is a registered confidential client (secret or signed assertion) or presents a valid
access token of this server (SMART's "token introspection" for apps). The answer is
`{"active": false}` for anything that is not a live token of ours: malformed, expired,
revoked, signed by an unknown key, a used refresh token. Nothing says which.

Revocation answers 200 whatever the token (RFC 7009 section 2.2: "invalid tokens do
not cause an error"): an access token's `jti` is recorded as revoked until it would
have expired, a refresh token is removed. A client revokes only its own tokens; for
anyone else's the answer is the same 200 and nothing changes, so revocation tells no
caller whether another client's token is live.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirserver.auth import registry
from fhirserver.auth.access import Access
from fhirserver.auth.client_auth import authenticate_client
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.oauth import OAuthError, invalid_client, invalid_request
from fhirserver.auth.server import AuthServer
from fhirserver.auth.tokens import MAX_TOKEN_CHARS, validate_access_token

INACTIVE: dict[str, Any] = {"active": False}


async def access_of(server: AuthServer, token: str) -> Access:
    """The `Access` a live access token of this server grants; raises `InvalidToken`
    (also for a revoked one)."""
    keys = await server.signing_keys()
    access = validate_access_token(token, keys, server.tokens, server.clock)
    if access.token_id is not None and await registry.is_token_revoked(
        server.store, access.token_id, server.clock()
    ):
        raise InvalidToken("revoked")
    return access


async def introspection_caller(
    server: AuthServer, form: Mapping[str, str], authorization: str | None
) -> str | None:
    """Who asks: None for a confidential client (a resource server, which may ask about
    any token), or the client of a bearer token, which may ask only about its own
    tokens (RFC 7662 section 4: a caller must not learn of other clients' tokens)."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        try:
            return str((await access_of(server, value.strip())).client_id)
        except InvalidToken:
            raise invalid_client("the bearer token is not a live access token") from None
    caller = await authenticate_client(server, form, authorization)
    if caller.client.kind == "public":
        raise invalid_client("introspection needs a confidential client or an access token")
    return None


async def introspect(server: AuthServer, form: Mapping[str, str]) -> dict[str, Any]:
    """RFC 7662 section 2.2: what the token is, or `{"active": false}`."""
    token = _token(form)
    if form.get("token_type_hint") != "refresh_token":
        try:
            access = await access_of(server, token)
        except InvalidToken:
            pass
        else:
            return _active_access(server, access)
    grant = await _refresh_grant(server, token)
    if grant is not None:
        body: dict[str, Any] = {
            "active": True,
            "client_id": grant.client_id,
            "scope": grant.scopes,
            "token_type": "refresh_token",
            "iss": server.tokens.issuer,
        }
        if grant.username is not None:
            body["sub"] = body["username"] = grant.username
        return body
    return dict(INACTIVE)


async def revoke(server: AuthServer, form: Mapping[str, str], authorization: str | None) -> None:
    """RFC 7009 section 2.1: the client authenticates, then its token is revoked."""
    caller = await authenticate_client(server, form, authorization)
    client_id = caller.client.client_id
    token = _token(form, client_id)
    keys = await server.signing_keys()
    try:
        access = validate_access_token(token, keys, server.tokens, server.clock)
    except InvalidToken:
        access = None
    if access is not None:
        if access.client_id == client_id and access.token_id and access.expires_at:
            await registry.revoke_token_id(server.store, access.token_id, access.expires_at)
        return
    grant = await _refresh_grant(server, token)
    if grant is not None and grant.client_id == client_id:
        await registry.drop_refresh_token(server.store, token)


def _token(form: Mapping[str, str], client_id: str | None = None) -> str:
    token = form.get("token")
    if not token:
        raise invalid_request("token is missing", client_id)
    if len(token) > MAX_TOKEN_CHARS:
        raise OAuthError("invalid_request", "token is too long", client_id=client_id)
    return token


async def _refresh_grant(server: AuthServer, token: str) -> registry.RefreshGrant | None:
    return await registry.get_refresh_grant(server.store, token, server.clock())


def _active_access(server: AuthServer, access: Access) -> dict[str, Any]:
    expires = access.expires_at or server.clock()
    body: dict[str, Any] = {
        "active": True,
        "scope": str(access.scopes),
        "client_id": access.client_id,
        "sub": access.subject,
        "exp": int(expires.timestamp()),
        "iss": server.tokens.issuer,
        "aud": server.tokens.audience,
        "jti": access.token_id,
        "token_type": "Bearer",
    }
    for name, value in (
        ("patient", access.patient),
        ("encounter", access.encounter),
        ("fhirUser", access.user),
    ):
        if value is not None:
            body[name] = value
    return body
