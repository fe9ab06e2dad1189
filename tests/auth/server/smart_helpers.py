"""Helpers of the authorization server's HTTP tests: registering clients, PKCE pairs,
client assertions, reading AuditEvents and decoding tokens with the published JWKS."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from fhirserver.auth import registry
from fhirserver.auth.passwords import new_client_secret
from fhirserver.resources import codec
from fhirserver.storage.base import Store

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
REDIRECT = "https://app.example/callback"


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge), RFC 7636 section 4.1 and 4.2."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def public_app(store: Store, client_id: str = "app", scopes: str = "") -> registry.Client:
    client = registry.Client(
        client_id,
        "public",
        scopes or "openid fhirUser launch/patient offline_access patient/*.rs",
        redirect_uris=(REDIRECT,),
    )
    await registry.put_client(store, client)
    return client


async def secret_client(store: Store, client_id: str, scopes: str) -> str:
    """A confidential symmetric client; its secret."""
    secret = new_client_secret()
    client = registry.Client(client_id, "symmetric", scopes, secret_hash=secret.hashed)
    await registry.put_client(store, client)
    return secret.value


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS384"})


def ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": kid, "alg": "ES384"})


async def key_client(
    store: Store, client_id: str, key: RSAKey | ECKey, scopes: str = "system/*.rs"
) -> None:
    jwks = {"keys": [key.as_dict(private=False)]}
    await registry.put_client(store, registry.Client(client_id, "asymmetric", scopes, jwks=jwks))


def assertion(
    key: RSAKey | ECKey,
    client_id: str,
    audience: str,
    now: datetime,
    *,
    lifetime: timedelta = timedelta(minutes=4),
    jti: str | None = None,
) -> str:
    """A client assertion as SMART backend-services.html describes it."""
    alg = "RS384" if isinstance(key, RSAKey) else "ES384"
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": int((now + lifetime).timestamp()),
        "jti": jti or secrets.token_urlsafe(16),
    }
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])


def backend_form(signed: str, scope: str = "system/*.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }


async def audit_events(store: Store) -> list[dict[str, Any]]:
    """Every AuditEvent stored, oldest first (read from the store: independent of who
    may search them over the API)."""
    found = []
    for version in await store.changes(0, 1000):
        if version.resource_type == "AuditEvent" and version.body is not None:
            found.append(codec.load_object(version.body))
    return found


async def verified_claims(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    """A token's claims, its signature checked against `GET /auth/jwks`."""
    keys = KeySet.import_key_set((await http.get("/auth/jwks")).json())
    claims: dict[str, Any] = jwt.decode(token, keys, algorithms=["RS256"]).claims
    return claims
