"""The browser's state between the authorization pages, kept in the store.

A browser session is a random id in a cookie; its record (keyed by the id's SHA-256,
so a copy of the store holds no usable session) carries the CSRF token every form
embeds (OWASP "Synchronizer Token Pattern"). Each authorization request in progress
is a flow of its own, keyed by a random id the pages carry in a hidden field and
bound to the session that started it, so two tabs authorizing two apps do not mix.
A login replaces the session (a new id and CSRF token) so that an id planted before
the login is worth nothing after it (session fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from fhirserver.auth.authorize import PatientContext, PendingAuthorization
from fhirserver.storage.base import Store

SESSION = "auth-session"
FLOW = "auth-flow"
SESSION_LIFETIME = timedelta(minutes=30)
# Long enough to log in, pick a patient and read the approval screen.
FLOW_LIFETIME = timedelta(minutes=10)
_ID_BYTES = 32


@dataclass(frozen=True)
class BrowserSession:
    session_id: str = field(repr=False)
    csrf: str = field(repr=False)

    @property
    def key(self) -> str:
        return _key(self.session_id)


@dataclass(frozen=True)
class Flow:
    """One authorization request in progress: the checked request, then who logged in
    and whose record the grant is about."""

    flow_id: str = field(repr=False)
    session_key: str = field(repr=False)
    pending: PendingAuthorization
    username: str | None = None
    fhir_user: str | None = None
    context: PatientContext = field(default_factory=PatientContext)


async def new_session(store: Store, now: datetime) -> BrowserSession:
    session = BrowserSession(secrets.token_urlsafe(_ID_BYTES), secrets.token_urlsafe(_ID_BYTES))
    await store.put_record(SESSION, session.key, {"csrf": session.csrf}, now + SESSION_LIFETIME)
    return session


async def find_session(
    store: Store, session_id: str | None, now: datetime
) -> BrowserSession | None:
    if not session_id or len(session_id) > 128:
        return None
    body = await store.get_record(SESSION, _key(session_id), now)
    if body is None or not isinstance(body.get("csrf"), str):
        return None
    return BrowserSession(session_id, body["csrf"])


async def replace_session(
    store: Store, old: BrowserSession, flow: Flow, now: datetime
) -> tuple[BrowserSession, Flow]:
    """A new session for the browser after a login, the flow moved over to it."""
    await store.delete_record(SESSION, old.key)
    session = await new_session(store, now)
    moved = replace(flow, session_key=session.key)
    await save_flow(store, moved, now)
    return session, moved


def csrf_matches(session: BrowserSession | None, submitted: str | None) -> bool:
    """Constant time, so the comparison's duration tells nothing about the token."""
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())


async def start_flow(
    store: Store, session: BrowserSession, pending: PendingAuthorization, now: datetime
) -> Flow:
    flow = Flow(secrets.token_urlsafe(_ID_BYTES), session.key, pending)
    await save_flow(store, flow, now)
    return flow


async def save_flow(store: Store, flow: Flow, now: datetime) -> None:
    body: dict[str, Any] = {
        "session": flow.session_key,
        "pending": flow.pending.to_record(),
        "username": flow.username,
        "fhir_user": flow.fhir_user,
        "patient": flow.context.patient,
        "encounter": flow.context.encounter,
        "pick": flow.context.pick,
    }
    await store.put_record(FLOW, _key(flow.flow_id), body, now + FLOW_LIFETIME)


async def find_flow(
    store: Store, flow_id: str | None, session: BrowserSession, now: datetime
) -> Flow | None:
    """The flow, if it exists and belongs to this browser session."""
    if not flow_id or len(flow_id) > 128:
        return None
    body = await store.get_record(FLOW, _key(flow_id), now)
    return _flow(flow_id, body, session)


async def finish_flow(
    store: Store, flow_id: str, session: BrowserSession, now: datetime
) -> Flow | None:
    """Take the flow (read and delete in one step): a form submitted twice, or by two
    tabs at once, issues one code."""
    body = await store.take_record(FLOW, _key(flow_id), now)
    return _flow(flow_id, body, session)


def _flow(flow_id: str, body: dict[str, Any] | None, session: BrowserSession) -> Flow | None:
    if body is None or not hmac.compare_digest(str(body.get("session")), session.key):
        return None
    context = PatientContext(body.get("patient"), body.get("encounter"), bool(body.get("pick")))
    return Flow(
        flow_id,
        session.key,
        PendingAuthorization.from_record(body["pending"]),
        body.get("username"),
        body.get("fhir_user"),
        context,
    )


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
