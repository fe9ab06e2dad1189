"""The websocket channel: binding tokens and one socket's session.

Two ways to bind a socket to subscriptions:

- Subscriptions Backport IG 1.1.0 (R5 `subscription.html#channels` "websocket"): the
  client gets a token from `$get-ws-binding-token`, connects to the `websocket-url` the
  operation names and sends `bind-with-token <token>`. The server answers with a
  `handshake` notification Bundle per subscription the token covers, then sends each
  event's notification Bundle as JSON text, oldest first, and a `heartbeat` Bundle when
  nothing was sent for the subscription's `backport-heartbeat-period`.
- R4 `subscription.html#2.46.7.2` (websocket): the client sends `bind <id>`, the server
  answers `bound <id>` and then `ping <id>` for each event (the client then searches). It
  carries no credential, so it is accepted only with authorization off.

Notifications are read from a `NotificationSource` (the store's event log): each session
tails `events_after(id, last number, limit)`, so a socket bound to one server process
gets the events another process recorded. A socket starts at the events recorded when it
binds: the handshake's `eventsSinceSubscriptionStart` tells a reconnecting client how
far the log is, and `$events` replays what it missed (the IG has no resume-from on bind).

Binding tokens are random (`secrets`), stored under their SHA-256 in the store's keyed
records with their expiry (like `fhirserver.auth.registry`'s one-time codes), so every
process sharing the store accepts them and a copy of the store hands out none. A token
stays good until it expires, for reconnects, and never longer than the access it was
issued under. It carries that access (never the access token itself): the socket shows an
event's focus only if that access may read it, by the test `$events` applies
(`operations.visible_events`); an event it may not read is sent as `empty` content (its
number and time, no focus, no resource). A binding ends when that access expires, when
its access token is revoked or it may no longer read the Subscription (looked at every
`recheck_seconds` and before each batch of events is sent): the token showed that
authorization "during a websocket connection", so a lapsed one shows nothing more. A
revoked access token's binding token no longer binds. With authorization off the access
is everything and every event is sent as the subscription's content says.

A token and a binding name one incarnation of a subscription (`model.records_key`): a
Subscription deleted and created again under its id is another subscription, its events
numbered from 1 again, so the old binding ends (its socket is told, and closed normally
with no binding left) and the old token binds nothing.

The `Limits` on sockets (per token, per subscription) are counted per process
(`SocketCounts`, in memory): N server processes sharing one store allow N times each
limit. A real cross-process limit (counts in the store, with leases for processes that
die holding them) is out of scope; the limits are there to stop one client exhausting
one process.

A bound socket needs nothing from its client: a peer that is gone is found by the
server's websocket pings (uvicorn's `ws_ping_interval`/`ws_ping_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from fhirserver.auth.access import Access
from fhirserver.auth.registry import is_token_revoked, secret_key
from fhirserver.auth.scopes import Interaction, parse_scopes
from fhirserver.clock import Clock
from fhirserver.interactions.guard import shows
from fhirserver.resources import codec
from fhirserver.storage.base import Store
from fhirserver.subscriptions.model import records_key

logger = logging.getLogger("fhirserver")

# Store record kind of the binding tokens.
TOKEN_KIND = "ws-binding-token"
HEARTBEAT_PERIOD = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
)
# What `secrets.token_urlsafe` makes: anything else is no token of ours, unlooked-up.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-]{20,128}")
_ID_SHAPE = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# RFC 6455 section 7.4.1 close codes.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_LATER = 1013


class NotificationSource(Protocol):
    """Where a websocket session reads notifications (the store's event log)."""

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The Subscription resource (None: gone)."""
        ...

    async def events_after(
        self, subscription_id: str, after: int, limit: int, access: Access
    ) -> list[tuple[int, dict[str, Any]]]:
        """(event number, notification Bundle) of the events numbered above `after`,
        oldest first, at most `limit`; an event whose focus `access` may not read (as
        `$events` decides) is sent as `empty` content."""
        ...

    async def events_so_far(self, subscription_id: str) -> int:
        """The number of the subscription's latest event (0: none yet)."""
        ...

    async def handshake(self, subscription_id: str) -> dict[str, Any]:
        """A `handshake` notification Bundle."""
        ...

    async def heartbeat(self, subscription_id: str) -> dict[str, Any]:
        """A `heartbeat` notification Bundle."""
        ...


# --- Binding tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """What a binding token stands for: the subscriptions it binds (each incarnation's
    `records_key`), until when, and the access it was issued under
    (`Access.everything()` with authorization off), which is what its sockets may show."""

    incarnations: tuple[str, ...]
    expires: datetime
    key: str
    access: Access

    @property
    def subscription_ids(self) -> tuple[str, ...]:
        return tuple(subscription_id_of(i) for i in self.incarnations)

    @property
    def client_id(self) -> str | None:
        return self.access.client_id

    @property
    def access_token_id(self) -> str | None:
        return self.access.token_id

    @property
    def access_expires(self) -> datetime | None:
        return self.access.expires_at


def subscription_id_of(incarnation: str) -> str:
    """The subscription id in a `records_key` ("id@incarnation", or the id alone)."""
    return incarnation.partition("@")[0]


async def issue_token(
    store: Store,
    incarnations: tuple[str, ...],
    access: Access,
    now: datetime,
    lifetime: timedelta,
) -> tuple[str, Binding]:
    """A new binding token for the subscriptions `incarnations` name (each one's
    `records_key`), and what it stands for. It expires after `lifetime`, or with the
    access it was issued under if that is sooner. The caller has checked that `access`
    may read each subscription."""
    token = secrets.token_urlsafe(32)
    expires = now + lifetime
    if access.expires_at is not None:
        expires = min(expires, access.expires_at)
    binding = Binding(incarnations, expires, secret_key(token), access)
    body = {
        "subscriptions": list(incarnations),
        "key": binding.key,
        "expires": expires.isoformat(),
        "access": _access_record(access),
    }
    await store.put_record(TOKEN_KIND, binding.key, body, expires)
    return token, binding


async def redeem_token(store: Store, token: str, now: datetime) -> Binding | None:
    """What `token` binds, or None when it is unknown, expired, or issued under an
    access token since revoked. It stays usable until it expires (reconnects)."""
    if not _TOKEN_SHAPE.fullmatch(token):
        return None
    key = secret_key(token)
    body = await store.get_record(TOKEN_KIND, key, now)
    # The lookup is by hash; comparing the stored hash once more costs nothing and keeps
    # the check constant-time whatever a backend's index does.
    if body is None or not hmac.compare_digest(str(body.get("key", "")), key):
        return None
    recorded = body.get("access")
    # A token recorded without its access (an older server's) shows nothing: refused,
    # the client asks for a new one.
    if not isinstance(recorded, dict):
        return None
    access = _access_of(recorded)
    if access.token_id is not None and await is_token_revoked(store, access.token_id, now):
        return None
    return Binding(
        incarnations=tuple(str(i) for i in body.get("subscriptions", [])),
        expires=datetime.fromisoformat(str(body["expires"])),
        key=key,
        access=access,
    )


def _access_record(access: Access) -> dict[str, Any]:
    """`access` as a stored record: no secret, the token itself never gets this far."""
    return {
        "client_id": access.client_id,
        "scopes": str(access.scopes),
        "subject": access.subject,
        "user": access.user,
        "patient": access.patient,
        "encounter": access.encounter,
        "token_id": access.token_id,
        "expires_at": None if access.expires_at is None else access.expires_at.isoformat(),
    }


def _access_of(record: dict[str, Any]) -> Access:
    def text(name: str) -> str | None:
        value = record.get(name)
        return value if isinstance(value, str) else None

    expires_at = text("expires_at")
    return Access(
        client_id=text("client_id"),
        scopes=parse_scopes(text("scopes") or ""),
        subject=text("subject"),
        user=text("user"),
        patient=text("patient"),
        encounter=text("encounter"),
        token_id=text("token_id"),
        expires_at=None if expires_at is None else datetime.fromisoformat(expires_at),
    )


def is_websocket(subscription: dict[str, Any]) -> bool:
    """Whether the Subscription's channel is a websocket (R4 `Subscription.channel.type`)."""
    channel = subscription.get("channel")
    return isinstance(channel, dict) and channel.get("type") == "websocket"


def heartbeat_period(subscription: dict[str, Any]) -> timedelta | None:
    """The Backport IG `backport-heartbeat-period` on `Subscription.channel`, in seconds;
    None: no heartbeats ("If not present, a heartbeat notification is not sent")."""
    channel = subscription.get("channel")
    extensions = channel.get("extension") if isinstance(channel, dict) else None
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == HEARTBEAT_PERIOD:
            seconds = extension.get("valueUnsignedInt")
            if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
                return timedelta(seconds=seconds)
    return None


# --- Sessions -----------------------------------------------------------------------------


class Disconnected(Exception):
    """The peer went away while the session was sending."""


class Connection(Protocol):
    """One accepted websocket, as the session needs it (the REST layer adapts Starlette's)."""

    async def receive_text(self) -> str | None:
        """The next text message; None once the peer has closed."""
        ...

    async def send_text(self, text: str) -> None:
        """Raises `Disconnected` when the peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class Limits:
    """What one socket may do and how often the session looks for events. The socket
    counts are per process (see the module docstring)."""

    # A socket that has not bound by then is closed.
    bind_seconds: float = 10.0
    # Longest client message (a bind with a token is well under 200 characters).
    max_message_chars: int = 1024
    max_sockets_per_token: int = 4
    max_sockets_per_subscription: int = 8
    max_subscriptions_per_socket: int = 16
    # How often the event log is read, and how many events per read.
    poll_seconds: float = 0.2
    batch: int = 50
    # How often a bound subscription is looked at again (deleted, turned off).
    recheck_seconds: float = 5.0


class SocketCounts:
    """Open sockets per binding token and per subscription, in this process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def take(self, keys: list[tuple[str, int]]) -> bool:
        """Count one more socket under each key, unless one is at its limit (then none)."""
        if any(self._open[key] >= limit for key, limit in keys):
            return False
        for key, _ in keys:
            self._open[key] += 1
        return True

    def give_back(self, keys: list[str]) -> None:
        for key in keys:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def open(self, key: str) -> int:
        return self._open[key]


@dataclass
class _Bound:
    """One subscription a socket is bound to (the session's own mutable state)."""

    subscription_id: str
    # The incarnation bound (`records_key`): another one under the id ends the binding.
    incarnation: str
    r4_style: bool
    last_number: int
    heartbeat: timedelta | None
    last_sent: datetime
    # What the socket may show of this subscription's events: the access its binding
    # token was issued under (one socket may bind tokens of different callers).
    access: Access


class _Refused(Exception):
    """Close the socket with this code, after an error line with this text."""

    def __init__(self, text: str, code: int = CLOSE_POLICY) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass
class Session:
    """One socket: its commands and the notifications it is owed."""

    connection: Connection
    source: NotificationSource
    store: Store
    clock: Clock
    counts: SocketCounts
    # Whether authorization is on: then only `bind-with-token` binds.
    authorization: bool
    limits: Limits = field(default_factory=Limits)
    bound: dict[str, _Bound] = field(default_factory=dict)
    counted: list[str] = field(default_factory=list)

    async def run(self) -> None:
        """Serve the socket until the peer leaves or the session must end; never lets an
        exception (or its trace) reach the peer."""
        inbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=8)
        reader = asyncio.create_task(self._read(inbox))
        try:
            await self._serve(inbox)
        except _Refused as refused:
            await self._refuse(refused)
        except Disconnected:
            pass
        except Exception:
            logger.exception("websocket session failed")
            await self._refuse(_Refused("internal error", CLOSE_SERVER_ERROR))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.counts.give_back(self.counted)

    async def _read(self, inbox: asyncio.Queue[str | None]) -> None:
        try:
            while (message := await self.connection.receive_text()) is not None:
                await inbox.put(message)
        finally:
            await inbox.put(None)

    async def _serve(self, inbox: asyncio.Queue[str | None]) -> None:
        loop = asyncio.get_running_loop()
        bind_by = loop.time() + self.limits.bind_seconds
        recheck_at = loop.time() + self.limits.recheck_seconds
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), self.limits.poll_seconds)
            except TimeoutError:
                pass
            else:
                if message is None:
                    return
                await self._command(message)
            if not self.bound:
                if loop.time() >= bind_by:
                    raise _Refused(f"no bind within {self.limits.bind_seconds:g} seconds")
                continue
            for bound in list(self.bound.values()):
                expires = bound.access.expires_at
                if expires is not None and self.clock() >= expires:
                    await self._lapse(bound, "has expired")
            if loop.time() >= recheck_at:
                recheck_at = loop.time() + self.limits.recheck_seconds
                await self._recheck()
            for bound in list(self.bound.values()):
                try:
                    await self._deliver(bound)
                except LookupError:
                    # The source found the subscription gone since the last recheck.
                    await self._end(bound)

    async def _command(self, message: str) -> None:
        if len(message) > self.limits.max_message_chars:
            raise _Refused("message too long", CLOSE_TOO_BIG)
        verb, _, argument = message.strip().partition(" ")
        argument = argument.strip()
        if verb == "bind-with-token" and argument:
            await self._bind_with_token(argument)
        elif verb == "bind" and argument:
            await self._bind_r4(argument)
        else:
            # An unknown command costs the client an error line, not the socket.
            await self._send("error unknown command: send bind-with-token <token>")

    async def _bind_with_token(self, token: str) -> None:
        now = self.clock()
        binding = await redeem_token(self.store, token, now)
        if binding is None:
            raise _Refused("the binding token is unknown or has expired")
        wanted = [i for i in binding.incarnations if subscription_id_of(i) not in self.bound]
        if not wanted:
            return
        self._room_for(len(wanted))
        subscriptions = {
            subscription_id_of(i): await self._websocket_subscription(subscription_id_of(i), i)
            for i in wanted
        }
        limits = [(f"token:{binding.key}", self.limits.max_sockets_per_token)]
        await self._count([*limits, *self._per_subscription(list(subscriptions))])
        for subscription_id, subscription in subscriptions.items():
            # The log's position before the handshake: an event recorded in between is
            # both counted in the handshake and sent (at least once, never lost).
            number = await self.source.events_so_far(subscription_id)
            try:
                handshake = await self.source.handshake(subscription_id)
            except LookupError:
                # Deleted since it was looked up above.
                raise _Refused(f"no websocket subscription {subscription_id}") from None
            await self._send(_json(handshake))
            self.bound[subscription_id] = _Bound(
                subscription_id,
                records_key(subscription),
                False,
                number,
                heartbeat_period(subscription),
                self.clock(),
                binding.access,
            )

    async def _bind_r4(self, subscription_id: str) -> None:
        if self.authorization:
            raise _Refused("bind needs a token on this server: send bind-with-token <token>")
        if not _ID_SHAPE.fullmatch(subscription_id):
            raise _Refused("no such websocket subscription")
        if subscription_id in self.bound:
            await self._send(f"bound {subscription_id}")
            return
        self._room_for(1)
        subscription = await self._websocket_subscription(subscription_id)
        await self._count(self._per_subscription([subscription_id]))
        number = await self.source.events_so_far(subscription_id)
        await self._send(f"bound {subscription_id}")
        # Authorization is off (checked above): the socket may show everything.
        self.bound[subscription_id] = _Bound(
            subscription_id,
            records_key(subscription),
            True,
            number,
            None,
            self.clock(),
            Access.everything(),
        )

    async def _websocket_subscription(
        self, subscription_id: str, incarnation: str | None = None
    ) -> dict[str, Any]:
        """The subscription, if it has a websocket channel and is on (and is
        `incarnation`, for a token: one issued for a deleted subscription binds nothing
        of one re-created under its id)."""
        subscription = await self.source.subscription(subscription_id)
        if (
            subscription is None
            or not is_websocket(subscription)
            or (incarnation is not None and records_key(subscription) != incarnation)
        ):
            raise _Refused(f"no websocket subscription {subscription_id}")
        if subscription.get("status") == "off":
            raise _Refused(f"subscription {subscription_id} is off")
        return subscription

    def _room_for(self, more: int) -> None:
        if len(self.bound) + more > self.limits.max_subscriptions_per_socket:
            limit = self.limits.max_subscriptions_per_socket
            raise _Refused(f"one socket binds at most {limit} subscriptions")

    def _per_subscription(self, ids: list[str]) -> list[tuple[str, int]]:
        return [(f"subscription:{i}", self.limits.max_sockets_per_subscription) for i in ids]

    async def _count(self, keys: list[tuple[str, int]]) -> None:
        if not self.counts.take(keys):
            raise _Refused("too many sockets for this token or subscription", CLOSE_TRY_LATER)
        self.counted.extend(key for key, _ in keys)

    async def _recheck(self) -> None:
        for bound in list(self.bound.values()):
            await self._stands(bound)

    async def _stands(self, bound: _Bound) -> bool:
        """Whether the binding still stands; if not, it is ended (and the socket closed
        with no binding left). It ends when its access token was revoked or may no
        longer read the Subscription, or when the subscription was deleted, re-created
        or turned off since binding."""
        token_id = bound.access.token_id
        if token_id is not None and await is_token_revoked(self.store, token_id, self.clock()):
            await self._lapse(bound, "was revoked")
            return False
        # The stored version, not the source's resource: the policy's read test (the
        # one `$get-ws-binding-token` applied) is on a version.
        version = await self.store.read("Subscription", bound.subscription_id)
        if version is None or version.body is None:
            await self._end(bound)
            return False
        if not shows(bound.access, Interaction.READ, version):
            await self._lapse(bound, "may no longer read the subscription")
            return False
        subscription = codec.load_object(version.body)
        if records_key(subscription) != bound.incarnation or subscription.get("status") == "off":
            await self._end(bound)
            return False
        return True

    async def _end(self, bound: _Bound) -> None:
        """The binding's subscription has ended: tell the socket; close it normally
        with no binding left."""
        del self.bound[bound.subscription_id]
        await self._send(f"error subscription {bound.subscription_id} has ended")
        if not self.bound:
            raise _Refused("no subscription left on this socket", CLOSE_NORMAL)

    async def _lapse(self, bound: _Bound, why: str) -> None:
        """The access a binding was made under has lapsed (`why`): the socket's last
        binding closes it as a policy violation (RFC 6455 section 7.4.1, 1008); another
        binding ends as a deleted subscription's does, the others going on."""
        if len(self.bound) == 1:
            raise _Refused(f"the access this socket was bound under {why}")
        await self._end(bound)

    async def _deliver(self, bound: _Bound) -> None:
        events = await self.source.events_after(
            bound.subscription_id, bound.last_number, self.limits.batch, bound.access
        )
        # Looked at again before sending (one read a batch, none when idle), so nothing
        # goes out after a revocation the recheck has not yet seen, nor another
        # incarnation's events: they were read from whatever holds the id now, and an
        # incarnation never comes back, so one bound after the read was bound during it.
        if events and not await self._stands(bound):
            return
        for number, bundle in events:
            if bound.r4_style:
                await self._send(f"ping {bound.subscription_id}")
            else:
                await self._send(_json(bundle))
            bound.last_number = number
            bound.last_sent = self.clock()
        due = bound.heartbeat is not None and self.clock() - bound.last_sent >= bound.heartbeat
        if not events and due:
            await self._send(_json(await self.source.heartbeat(bound.subscription_id)))
            bound.last_sent = self.clock()

    async def _send(self, text: str) -> None:
        await self.connection.send_text(text)

    async def _refuse(self, refused: _Refused) -> None:
        with contextlib.suppress(Disconnected, Exception):
            await self.connection.send_text(f"error {refused.text}")
        with contextlib.suppress(Disconnected, Exception):
            await self.connection.close(refused.code, refused.text[:120])


def _json(bundle: dict[str, Any]) -> str:
    return orjson.dumps(bundle).decode()
