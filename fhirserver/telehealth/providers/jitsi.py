"""Jitsi Meet: self-hosted with JWT authentication, or a public instance with no account.

Rooms appear when the first participant joins, so `create_room` makes no network call: it
derives the room name from the key with HMAC-SHA256 under a secret (`room_secret`, by
default the app secret), which makes the name stable for the same key across restarts and
unguessable without the secret.

**JWT mode** (`app_id` and `app_secret` set; the server runs `jitsi-meet-tokens` with
`authentication = "token"`). Each participant gets an HS256 token with the claims of
lib-jitsi-meet doc/tokens.md ("Token structure", "Token Identifiers"): `iss` the app id,
`aud` the audience the server accepts (`asap_accepted_audiences`; "jitsi" by default),
`sub` the tenant or the domain, `room` the room name, `nbf`/`exp`, and `context.user`
{id, name}. The join URL is `https://<domain>/[<tenant>/]<room>?jwt=<token>` (tokens.md
"Jitsi-meet options"). Moderator rights: stock Jitsi makes every token holder a moderator;
only a token-moderation plugin on the server honours the claim. We set all three spellings
in use — `context.user.moderator` (boolean, jitsi-meet's own moderation and JaaS),
`context.user.affiliation` "owner"/"member" (jitsi-contrib token_affiliation) and a
top-level boolean `moderator` (token_moderation plugin) — so that the host is moderator
and the guest is not once the server enforces it.

**No-account mode** (no app secret; default domain meet.jit.si). No tokens at all: the
join URL is the room URL, and anyone who has it can join, for as long as the instance
keeps the room name open; there is no enforced host role (the public instance decides who
moderates), `close_room` cannot end anything, and tokens' "expiry" does not exist
(`ParticipantToken.expires_at` is None). What protects the visit is only that the room
name is unguessable (128 bits) and handed out to the participants alone. Pass a persisted
`room_secret` so names survive restarts; without one a random per-process secret is used.

**Webhooks**: Jitsi has none built in. The jitsi-contrib `event_sync` Prosody component
(prosody-plugins/event_sync/README.md) POSTs room and occupant events to an API with static
headers from `api_headers`; configure it with `Authorization = "Bearer <webhook_secret>"`
and set `webhook_secret` here, and `parse_webhook` verifies that header in constant time and
maps `muc-occupant-joined` / `muc-occupant-left` / `muc-room-destroyed`. Without
`webhook_secret` (always in no-account mode), `parse_webhook` rejects everything.
"""

from __future__ import annotations

import hmac
import json
import secrets as secrets_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from fhirserver.telehealth.providers import _common as common
from fhirserver.telehealth.providers.base import (
    EventKind,
    ParticipantRole,
    ParticipantToken,
    Room,
    RoomEvent,
    WebhookRejected,
)

PUBLIC_DOMAIN = "meet.jit.si"

# event_sync's event names -> ours. Breakout-room events are ignored: moving to a breakout
# room shows up as leaving the main room.
_EVENTS: dict[str, EventKind] = {
    "muc-occupant-joined": "participant-joined",
    "muc-occupant-left": "participant-left",
    "muc-room-destroyed": "room-ended",
}


@dataclass(frozen=True, kw_only=True)
class JitsiConfig:
    domain: str = PUBLIC_DOMAIN
    # JWT mode needs both; leave both unset for the no-account mode.
    app_id: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    audience: str = "jitsi"
    # Multi-tenant deployments (https://domain/<tenant>/<room>): the token's `sub`.
    tenant: str | None = None
    room_prefix: str = "visit-"
    # HMAC key for room names. Default: the app secret; in no-account mode, random per process.
    room_secret: str | None = field(default=None, repr=False)
    # Value expected in `Authorization: Bearer <webhook_secret>` from the event_sync component.
    webhook_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if bool(self.app_id) != bool(self.app_secret):
            raise ValueError("Jitsi JWT mode needs both app_id and app_secret (or neither)")
        if not self.domain or "/" in self.domain:
            raise ValueError("Jitsi domain must be a host name such as meet.example.org")
        if self.tenant is not None and not self.tenant.strip("/"):
            raise ValueError("Jitsi tenant must not be empty")
        common.check_prefix(self.room_prefix)

    @property
    def no_account(self) -> bool:
        return not self.app_secret


class JitsiProvider:
    """Jitsi Meet behind the `VideoProvider` protocol (see the module docstring)."""

    name = "jitsi"

    def __init__(self, config: JitsiConfig, *, clock: common.Clock = common.utcnow) -> None:
        self.config = config
        self._clock = clock
        self._key = common.oct_key(config.app_secret, "app_secret") if config.app_secret else None
        room_secret = config.room_secret or config.app_secret
        self._room_secret = room_secret.encode() if room_secret else secrets_module.token_bytes(32)
        self._tenant = config.tenant.strip("/").lower() if config.tenant else None

    @property
    def no_account(self) -> bool:
        """True when there are no tokens: anyone with the room URL can join."""
        return self._key is None

    def _room_url(self, name: str) -> str:
        path = f"{quote(self._tenant)}/{name}" if self._tenant else name
        return f"https://{self.config.domain}/{path}"

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        # Jitsi creates the room on first join; nothing to call. max_participants is a
        # server-wide setting (muc_max_occupants) in Jitsi, not a per-room one.
        return await self.room(common.room_name(self.config.room_prefix, key, self._room_secret))

    async def room(self, room_id: str) -> Room:
        return Room(
            provider=self.name, room_id=room_id, name=room_id, join_url=self._room_url(room_id)
        )

    async def close_room(self, room: Room) -> None:
        # Nothing to end remotely: the room disappears when its last participant leaves, and
        # tokens stop admitting at their expiry (keep ttl short). Idempotent by construction.
        return None

    def participant_token(
        self,
        room: Room,
        identity: str,
        display: str,
        role: ParticipantRole,
        ttl: timedelta,
        *,
        record: bool = False,
    ) -> ParticipantToken:
        role = common.check_token_request(room, self.name, identity, role, ttl, record)
        url = self._room_url(room.name)
        if self._key is None:
            # Jitsi's URL-hash config overrides (userInfo.displayName) prefill the name.
            fragment = quote(json.dumps(display), safe="")
            return ParticipantToken(
                token=None,
                join_url=f"{url}#userInfo.displayName={fragment}",
                role=role,
                expires_at=None,
            )
        now = self._clock()
        expires = now + ttl
        moderator = role == "host"
        claims: dict[str, Any] = {
            "aud": self.config.audience,
            "iss": self.config.app_id,
            "sub": self._tenant or self.config.domain,
            "room": room.name,
            "iat": common.epoch(now),
            "nbf": common.epoch(now),
            "exp": common.epoch(expires),
            "context": {
                "user": {
                    "id": identity,
                    "name": display,
                    "moderator": moderator,
                    "affiliation": "owner" if moderator else "member",
                }
            },
            "moderator": moderator,
        }
        token = common.sign_hs256(claims, self._key)
        return ParticipantToken(
            token=token, join_url=f"{url}?jwt={token}", role=role, expires_at=expires
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        secret = self.config.webhook_secret
        if not secret:
            raise WebhookRejected(
                "Jitsi has no built-in webhooks; configure the event_sync component and "
                "webhook_secret to receive them"
            )
        got = common.header(headers, "Authorization") or ""
        if not hmac.compare_digest(got.encode(), f"Bearer {secret}".encode()):
            raise WebhookRejected("webhook secret is missing or wrong")
        data = common.json_object(body)
        kind = _EVENTS.get(str(data.get("event_name")))
        if kind is None or data.get("is_breakout") is True:
            return []
        room = common.text_field(data, "room_name")
        if room is None:
            raise WebhookRejected("webhook event has no room_name")
        if room.startswith("[") and "]" in room:  # "[tenant]room" in multi-tenant setups
            room = room.split("]", 1)[1]
        if kind == "room-ended":
            at = common.parse_time(data.get("destroyed_at"))
            return [RoomEvent(self.name, kind, room, at or self._clock())]
        occupant = data.get("occupant")
        if not isinstance(occupant, dict):
            raise WebhookRejected("webhook event has no occupant")
        stamp = occupant.get("joined_at" if kind == "participant-joined" else "left_at")
        return [
            RoomEvent(
                provider=self.name,
                kind=kind,
                room_id=room,
                at=common.parse_time(stamp) or self._clock(),
                participant_identity=common.text_field(occupant, "id"),
                participant_display=common.text_field(occupant, "name"),
                participant_sid=common.text_field(occupant, "occupant_jid"),
            )
        ]

    async def aclose(self) -> None:
        return None
