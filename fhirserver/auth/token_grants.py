"""The token endpoint's three grants (RFC 6749 section 3.2), as plain functions:

- `authorization_code` (section 4.1.3, with PKCE: RFC 7636 section 4.6, S256 only):
  the code is taken from the store in one step, so it works once; the client,
  the redirect URI and the verifier must match what the authorization request said;
- `refresh_token` (section 6): rotation, the token used is taken and a new one
  issued, so a stolen one that was already used is refused; never more scope than the
  original grant;
- `client_credentials` (section 4.4, SMART backend-services.html): a confidential
  client on its own account, `system/` scopes only.

Scopes granted are never more than the client is registered for, nor more than was
approved (`scopes.narrow`). Refusals are `OAuthError`s in RFC 6749 section 5.2 terms.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirserver.auth import registry
from fhirserver.auth.access import Access
from fhirserver.auth.client_auth import Authenticated, authenticate_client
from fhirserver.auth.oauth import OAuthError, invalid_grant, invalid_request
from fhirserver.auth.scopes import Context, Scopes, narrow, parse_scopes
from fhirserver.auth.server import AuthServer
from fhirserver.auth.tokens import mint_access_token, mint_id_token

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
# RFC 7636 section 4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_MAX_PARAMETER = 4096


@dataclass(frozen=True)
class TokenIssued:
    """A successful token response (RFC 6749 section 5.1) and what the audit trail
    records of it: the client, the user, the token's id; never the token."""

    body: dict[str, Any] = field(repr=False)
    grant_type: str
    access: Access


async def token_request(
    server: AuthServer, form: Mapping[str, str], authorization: str | None
) -> TokenIssued:
    """Answer one POST to the token endpoint, or raise `OAuthError`."""
    if any(len(value) > _MAX_PARAMETER for value in form.values()):
        raise invalid_request("a parameter is too long")
    grant_type = form.get("grant_type", "")
    if grant_type not in GRANT_TYPES:
        raise OAuthError("unsupported_grant_type", "grant_type is not supported")
    caller = await authenticate_client(server, form, authorization)
    client_id = caller.client.client_id
    try:
        if grant_type == "authorization_code":
            return await _authorization_code(server, caller, form)
        if grant_type == "refresh_token":
            return await _refresh_token(server, caller, form)
        return await _client_credentials(server, caller, form)
    except OAuthError as error:
        error.client_id = error.client_id or client_id
        raise


async def _authorization_code(
    server: AuthServer, caller: Authenticated, form: Mapping[str, str]
) -> TokenIssued:
    client = caller.client
    code = form.get("code")
    if not code:
        raise invalid_request("code is missing")
    # Taken whatever follows: a code that was tried with a wrong verifier is spent.
    grant = await registry.take_code(server.store, code, server.clock())
    if grant is None:
        raise invalid_grant("the code is invalid, expired or already used")
    if grant.client_id != client.client_id:
        raise invalid_grant("the code was issued to another client")
    if form.get("redirect_uri") != grant.redirect_uri:
        raise invalid_grant("redirect_uri does not match the authorization request")
    if not pkce_matches(form.get("code_verifier"), grant.code_challenge):
        raise invalid_grant("code_verifier does not match the code_challenge")
    scopes = narrow(parse_scopes(client.scopes), parse_scopes(grant.scopes))
    if not str(scopes):
        raise OAuthError("invalid_scope", "no requested scope can be granted")
    access, refresh = _user_access(client.client_id, scopes, scopes, grant)
    return await _issue(server, "authorization_code", access, refresh, nonce=grant.nonce)


async def _refresh_token(
    server: AuthServer, caller: Authenticated, form: Mapping[str, str]
) -> TokenIssued:
    client = caller.client
    token = form.get("refresh_token")
    if not token:
        raise invalid_request("refresh_token is missing")
    grant = await registry.take_refresh_token(server.store, token, server.clock())
    if grant is None:
        raise invalid_grant("the refresh token is invalid, expired or already used")
    if grant.client_id != client.client_id:
        raise invalid_grant("the refresh token was issued to another client")
    if grant.username is not None:
        # A user removed (or re-linked to another record) takes their grants along.
        user = await registry.get_user(server.store, grant.username, server.clock())
        if user is None or user.fhir_user != grant.fhir_user:
            raise invalid_grant("the refresh token's user is no longer registered")
    # Still within what the client is registered for today (it may have been narrowed).
    allowed = narrow(parse_scopes(client.scopes), parse_scopes(grant.scopes))
    requested = form.get("scope")
    # RFC 6749 section 6: a narrower scope may be asked for, never a broader one.
    scopes = allowed if requested is None else narrow(allowed, parse_scopes(requested))
    if not str(scopes):
        raise OAuthError("invalid_scope", "no requested scope can be granted")
    access, renewed = _user_access(client.client_id, scopes, allowed, grant)
    return await _issue(server, "refresh_token", access, renewed, nonce=None)


def _user_access(
    client_id: str,
    scopes: Scopes,
    renewable: Scopes,
    grant: registry.AuthorizationGrant | registry.RefreshGrant,
) -> tuple[Access, registry.RefreshGrant]:
    """The access a user's grant gives now (`scopes`), and the refresh grant that
    renews it, up to `renewable` (a refresh may narrow one token, not the grant)."""
    access = Access(
        client_id=client_id,
        scopes=scopes,
        subject=grant.username,
        user=grant.fhir_user,
        patient=grant.patient,
        encounter=grant.encounter,
    )
    context = (grant.username, grant.fhir_user, grant.patient, grant.encounter)
    return access, registry.RefreshGrant(client_id, str(renewable), *context)


async def _client_credentials(
    server: AuthServer, caller: Authenticated, form: Mapping[str, str]
) -> TokenIssued:
    client = caller.client
    if client.kind == "public":
        raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
    requested = form.get("scope")
    if not requested:
        # SMART backend-services.html: scope is REQUIRED.
        raise invalid_request("scope is missing")
    narrowed = narrow(parse_scopes(client.scopes), parse_scopes(requested))
    # On its own account a client has no user and no patient: system/ scopes only, and
    # none of the launch or identity scopes.
    system = tuple(p for p in narrowed.permissions if p.context == Context.SYSTEM)
    if not system:
        raise OAuthError("invalid_scope", "no requested system scope can be granted")
    access = Access(client_id=client.client_id, scopes=Scopes(system), subject=client.client_id)
    return await _issue(server, "client_credentials", access, None, nonce=None)


async def _issue(
    server: AuthServer,
    grant_type: str,
    access: Access,
    refresh: registry.RefreshGrant | None,
    *,
    nonce: str | None,
) -> TokenIssued:
    keys = await server.signing_keys()
    issued = mint_access_token(access, keys, server.tokens, server.clock)
    scopes = issued.access.scopes
    body: dict[str, Any] = {
        "access_token": issued.value,
        "token_type": "Bearer",
        "expires_in": int(server.tokens.lifetime.total_seconds()),
        "scope": str(scopes),
    }
    # SMART app-launch.html: launch context arrives with the access token.
    if access.patient is not None:
        body["patient"] = access.patient
    if access.encounter is not None:
        body["encounter"] = access.encounter
    if scopes.openid and access.subject is not None:
        # OpenID Connect Core section 3.1.3.3, SMART "openid fhirUser".
        body["id_token"] = mint_id_token(
            keys,
            server.tokens,
            server.clock,
            subject=access.subject,
            client_id=str(access.client_id),
            fhir_user=access.user if scopes.fhir_user else None,
            nonce=nonce,
        )
    # Whether the grant renews is the grant's own scopes' to say, not this one token's:
    # a narrower token asked for at a refresh must not cost the app its refresh grant.
    renewable = parse_scopes(refresh.scopes) if refresh is not None else scopes
    if refresh is not None and (renewable.offline_access or renewable.online_access):
        token = secrets.token_urlsafe(32)
        expires = server.clock() + server.refresh_lifetime
        await registry.save_refresh_token(server.store, token, refresh, expires)
        body["refresh_token"] = token
    return TokenIssued(body, grant_type, issued.access)


def pkce_matches(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 section 4.6, S256: BASE64URL(SHA256(verifier)) == challenge, compared
    in constant time."""
    if verifier is None or _VERIFIER.fullmatch(verifier) is None:
        return False
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return hmac.compare_digest(computed.encode(), challenge.encode())
