"""What the built-in authorization server keeps in the store (SMART App Launch 2.2,
RFC 6749): registered clients, users, authorization codes, EHR launches, refresh
tokens, revoked token ids and the client-assertion `jti`s already seen.

Plain async functions over the store's keyed records (`Store.put_record` and
friends), so every server process sharing the store sees the same registry and a
restart keeps it. Authorization codes, refresh tokens and launch values are
secrets: they are stored under their SHA-256, so a copy of the store hands out
nothing usable. None of these functions may be called inside a unit of work.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from fhirserver.storage.base import Store

CLIENT_KINDS = ("public", "symmetric", "asymmetric")
# SMART "fhirUser": a reference to the FHIR resource that is the user.
FHIR_USER = re.compile(r"(Patient|Practitioner|RelatedPerson)/[A-Za-z0-9\-.]{1,64}")

# Record kinds (one namespace each in the store).
CLIENT, USER, CODE, LAUNCH, REFRESH, REVOKED, JTI = (
    "client",
    "user",
    "code",
    "launch",
    "refresh",
    "revoked",
    "jti",
)


@dataclass(frozen=True)
class Client:
    """A registered client. `kind`: "public" (no secret; SMART client-public),
    "symmetric" (client secret, stored as `passwords.hash_client_secret`) or
    "asymmetric" (`private_key_jwt` with keys in `jwks` or at `jwks_url`)."""

    client_id: str
    kind: str
    # What it may be granted, space-separated.
    scopes: str
    redirect_uris: tuple[str, ...] = ()
    secret_hash: str | None = None
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in CLIENT_KINDS:
            raise ValueError(f"A client's kind is one of {', '.join(CLIENT_KINDS)}")
        if not self.client_id or len(self.client_id) > 255:
            raise ValueError("A client_id has 1 to 255 characters")
        if self.kind == "symmetric" and not self.secret_hash:
            raise ValueError("A symmetric client has a secret")
        if self.kind == "asymmetric" and (self.jwks is None) == (self.jwks_url is None):
            raise ValueError("An asymmetric client has a JWKS or a JWKS URL, not both")


@dataclass(frozen=True)
class User:
    """A person who logs in at the authorization server; `fhir_user` is the FHIR
    resource they are ("Patient/1", "Practitioner/7", "RelatedPerson/3")."""

    username: str
    fhir_user: str
    password_hash: str

    def __post_init__(self) -> None:
        if not self.username or len(self.username) > 255:
            raise ValueError("A username has 1 to 255 characters")
        if FHIR_USER.fullmatch(self.fhir_user) is None:
            raise ValueError("fhirUser is Patient/ID, Practitioner/ID or RelatedPerson/ID")


@dataclass(frozen=True)
class AuthorizationGrant:
    """What an authorization code stands for (RFC 6749 section 4.1.2): the scopes the
    user approved (narrowed, never more than the client may have), the PKCE S256
    challenge (RFC 7636 section 4.2), the user and the launch context."""

    client_id: str
    redirect_uri: str
    scopes: str
    code_challenge: str
    username: str | None
    fhir_user: str | None
    patient: str | None = None
    encounter: str | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class LaunchContext:
    """What an EHR launch binds (SMART app-launch.html "EHR launch"): the `launch`
    value an EHR got from `POST /auth/launch` stands for this context."""

    patient: str | None = None
    encounter: str | None = None
    # Who asked for the launch (the EHR's user or client), for the audit trail.
    created_by: str | None = None


@dataclass(frozen=True)
class RefreshGrant:
    """What a refresh token stands for (RFC 6749 section 6): the grant it renews,
    never more scope than was approved."""

    client_id: str
    scopes: str
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None


def secret_key(value: str) -> str:
    """The record key of a secret value (a code, refresh token or launch): its
    SHA-256, so the store never holds the value itself."""
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


# Clients


def client_body(client: Client) -> dict[str, Any]:
    """A client as its record body."""
    return _body(client)


def user_body(user: User) -> dict[str, Any]:
    return _body(user)


async def put_client(store: Store, client: Client) -> None:
    await store.put_record(CLIENT, client.client_id, _body(client), None)


async def get_client(store: Store, client_id: str, now: datetime) -> Client | None:
    body = await store.get_record(CLIENT, client_id, now)
    return None if body is None else _client(body)


async def list_clients(store: Store, now: datetime) -> list[Client]:
    return [_client(record.body) for record in await store.list_records(CLIENT, now)]


async def remove_client(store: Store, client_id: str) -> bool:
    return await store.delete_record(CLIENT, client_id)


# Users


async def put_user(store: Store, user: User) -> None:
    await store.put_record(USER, user.username, _body(user), None)


async def get_user(store: Store, username: str, now: datetime) -> User | None:
    body = await store.get_record(USER, username, now)
    return None if body is None else User(**body)


async def list_users(store: Store, now: datetime) -> list[User]:
    return [User(**record.body) for record in await store.list_records(USER, now)]


async def remove_user(store: Store, username: str) -> bool:
    return await store.delete_record(USER, username)


# Authorization codes: one-time (RFC 6749 section 4.1.2, "MUST NOT use ... more than once")


async def save_code(store: Store, code: str, grant: AuthorizationGrant, expires: datetime) -> None:
    await store.put_record(CODE, secret_key(code), _body(grant), expires)


async def take_code(store: Store, code: str, now: datetime) -> AuthorizationGrant | None:
    """The grant, removed in the same step: of two exchanges of one code, one gets it."""
    body = await store.take_record(CODE, secret_key(code), now)
    return None if body is None else AuthorizationGrant(**body)


# EHR launches


async def save_launch(store: Store, launch: str, context: LaunchContext, expires: datetime) -> None:
    await store.put_record(LAUNCH, secret_key(launch), _body(context), expires)


async def get_launch(store: Store, launch: str, now: datetime) -> LaunchContext | None:
    body = await store.get_record(LAUNCH, secret_key(launch), now)
    return None if body is None else LaunchContext(**body)


# Refresh tokens: rotated (OAuth 2.0 Security BCP section 4.14.2), each used once


async def save_refresh_token(
    store: Store, token: str, grant: RefreshGrant, expires: datetime
) -> None:
    await store.put_record(REFRESH, secret_key(token), _body(grant), expires)


async def take_refresh_token(store: Store, token: str, now: datetime) -> RefreshGrant | None:
    body = await store.take_record(REFRESH, secret_key(token), now)
    return None if body is None else RefreshGrant(**body)


async def get_refresh_grant(store: Store, token: str, now: datetime) -> RefreshGrant | None:
    """What a refresh token stands for, leaving it in place (introspection)."""
    body = await store.get_record(REFRESH, secret_key(token), now)
    return None if body is None else RefreshGrant(**body)


async def drop_refresh_token(store: Store, token: str) -> bool:
    return await store.delete_record(REFRESH, secret_key(token))


# Revoked access tokens (RFC 7009), by jti, kept until the token would expire anyway


async def revoke_token_id(store: Store, token_id: str, until: datetime) -> None:
    await store.put_record(REVOKED, token_id, {}, until)


async def is_token_revoked(store: Store, token_id: str, now: datetime) -> bool:
    return await store.get_record(REVOKED, token_id, now) is not None


# Client-assertion jtis (RFC 7523 section 3, SMART backend-services.html)


async def assertion_seen_before(
    store: Store, client_id: str, jti: str, until: datetime, now: datetime
) -> bool:
    """Whether `client_id` used `jti` before, recording it until `until` if not; one
    atomic insert-if-absent, so two requests racing with one assertion cannot both pass.
    Keyed by client: SMART's "for the given iss"."""
    first = await store.add_record(JTI, f"{len(client_id)}:{client_id}:{jti}", {}, until, now)
    return not first


def _body(value: Any) -> dict[str, Any]:
    body: dict[str, Any] = asdict(value)
    return body


def _client(body: dict[str, Any]) -> Client:
    return Client(**{**body, "redirect_uris": tuple(body.get("redirect_uris") or ())})
