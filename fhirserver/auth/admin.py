"""Registering clients and users (the `fhirserver clients` / `fhirserver users`
commands): checks what is registered, so that the token endpoint never meets a client
it cannot serve, and hashes secrets before they reach the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fhirserver.auth import registry
from fhirserver.auth.assertions import ALGORITHMS
from fhirserver.auth.passwords import hash_password, new_client_secret
from fhirserver.auth.scopes import parse_scopes
from fhirserver.storage.base import Store

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Private JWK members (RFC 7518 sections 6.2.2, 6.3.2): a registered JWKS is public.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class AdminError(ValueError):
    """A registration refused, with a message for the operator."""


@dataclass(frozen=True)
class Registered:
    """A client just registered; `secret` is shown once and stored only hashed."""

    client: registry.Client
    secret: str | None = field(default=None, repr=False)


def check_scopes(text: str) -> str:
    scopes = parse_scopes(text)
    if scopes.ignored:
        raise AdminError(f"Unknown or malformed scopes: {' '.join(scopes.ignored)}")
    if not str(scopes):
        raise AdminError("A client is registered with at least one scope")
    return " ".join(text.split())


def check_redirect_uri(uri: str) -> str:
    """Absolute, no fragment (RFC 6749 section 3.1.2), https unless on loopback
    (RFC 8252 section 7.3 for native apps)."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.netloc or parts.scheme not in ("https", "http"):
        raise AdminError(f"A redirect URI is an absolute http(s) URL without a fragment: {uri}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise AdminError(f"A redirect URI uses https unless it is on loopback: {uri}")
    return uri


def check_jwks(jwks: Any) -> dict[str, Any]:
    """A JWK Set (RFC 7517 section 5) of public signing keys SMART allows."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise AdminError('A JWKS is a JSON object with a non-empty "keys" list')
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            raise AdminError("Every key in the JWKS has a kid")
        if key.get("kty") not in ALGORITHMS.values():
            raise AdminError("The JWKS keys are RSA (RS384) or EC P-384 (ES384) keys")
        if any(member in key for member in _PRIVATE_MEMBERS):
            raise AdminError("The JWKS holds a private key: register the public keys only")
    return {"keys": keys}


def check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise AdminError("A JWKS URL uses https (http only on loopback)")
    return url


async def add_client(
    store: Store,
    client_id: str,
    *,
    scopes: str,
    now: datetime,
    public: bool = False,
    secret: bool = False,
    jwks: Any = None,
    jwks_url: str | None = None,
    redirect_uris: tuple[str, ...] = (),
) -> Registered:
    """Register a new client: public, symmetric (`secret`: one is generated) or
    asymmetric (`jwks` or `jwks_url`). Refuses an id already registered."""
    if sum((public, secret, jwks is not None, jwks_url is not None)) != 1:
        raise AdminError("A client is one of --public, --secret, --jwks FILE or --jwks-url URL")
    uris = tuple(check_redirect_uri(uri) for uri in redirect_uris)
    if public and not uris:
        raise AdminError("A public client needs a --redirect-uri")
    generated = new_client_secret() if secret else None
    try:
        client = registry.Client(
            client_id=client_id,
            kind="public" if public else "symmetric" if secret else "asymmetric",
            scopes=check_scopes(scopes),
            redirect_uris=uris,
            secret_hash=generated.hashed if generated else None,
            jwks=check_jwks(jwks) if jwks is not None else None,
            jwks_url=check_jwks_url(jwks_url) if jwks_url is not None else None,
        )
    except AdminError:
        raise
    except ValueError as error:
        raise AdminError(str(error)) from None
    body = registry.client_body(client)
    if not await store.add_record(registry.CLIENT, client_id, body, None, now):
        raise AdminError(f"Client {client_id!r} is registered already; remove it first")
    return Registered(client, generated.value if generated else None)


async def add_user(
    store: Store, username: str, *, fhir_user: str, password: str, now: datetime
) -> registry.User:
    """Register a new user; the password is stored as an scrypt hash only."""
    try:
        user = registry.User(username, fhir_user, hash_password(password))
    except ValueError as error:
        raise AdminError(str(error)) from None
    if not await store.add_record(registry.USER, username, registry.user_body(user), None, now):
        raise AdminError(f"User {username!r} exists already; remove it first")
    return user
