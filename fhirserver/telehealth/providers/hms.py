"""100ms: server-side REST API v2 with a management token, app tokens for participants,
Prebuilt room links from room codes, webhooks authenticated by a secret header.

Followed docs (100ms.live/docs/server-side/v2):
- "Authentication and tokens": the management token is an HS256 JWT signed with the app
  secret: `access_key`, `type` "management", `version` 2, `iat`, `nbf`, `exp`, `jti`;
  sent as `Authorization: Bearer`. The app (auth) token a peer joins with has `access_key`,
  `room_id`, `user_id`, `role`, `type` "app", `version` 2, `jti`, `iat`, `nbf`, `exp`.
- "Create a room" (`POST /v2/rooms`): `name` (a-z A-Z 0-9 . - : _, case-insensitive),
  `description`, `template_id`, ... — "If Create room request is triggered with an
  existing room name, then the corresponding room ID is returned", so create is
  idempotent on the name. The room object's `size` caps the peers and its `webhook`
  (url and headers) sends that room's events.
- "Create Room Codes" (`POST /v2/room-codes/room/<room_id>`): one code per role,
  `{"data": [{"code", "role", "enabled", ...}]}`; 404 room not found, 403 room disabled.
  Room codes "do not expire" and are "not JWT tokens and thus, not entirely secure":
  a Prebuilt link `https://<template-subdomain>/meeting/<room-code>` admits anyone who has
  it, with that role, until the code or the room is disabled.
- "End an active room" (`POST /v2/active-rooms/<room_id>/end-room`, `{reason, lock}`):
  ends the session; `lock: true` also keeps peers out afterwards. With no active session
  there is nothing to end (404), and then no lock is applied either — so `close_room` also
  disables the room (`POST /v2/rooms/<room_id>` `{"enabled": false}`; the room object doc:
  a disabled room "users will not be able to join ... later"), which stops its room codes
  (403 "Room is disabled"). 404 on either call means already gone: success.
- "Webhook": 100ms POSTs JSON events (`version`, `id`, `type`, `timestamp`, `data`) and
  passes configured headers through "transparently ... for securing or tracing the origin
  of the request". We verify one secret header (`webhook_header`, value `webhook_secret`)
  in constant time. There is no signature over the body and no timestamp in the header:
  de-duplicate on `RoomEvent.event_id`. Events: `peer.join.success`,
  `peer.leave.success`, `session.close.success`.

`participant_token` signs an app token (expires after `ttl`) and builds the Prebuilt link
for the role's room code with `name` and `userId` (the Prebuilt link's documented query
parameters). The token is what expires; the Prebuilt link works until `close_room`.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from fhirserver.telehealth.providers import _common as common
from fhirserver.telehealth.providers.base import (
    EventKind,
    ParticipantRole,
    ParticipantToken,
    ProviderError,
    Room,
    RoomEvent,
    WebhookRejected,
)

API_BASE = "https://api.100ms.live/v2"
_MANAGEMENT_TTL = timedelta(minutes=10)
_CODE = "room_code:"  # Room.extra key prefix: room_code:<100ms role> -> code
_EVENTS: dict[str, EventKind] = {
    "peer.join.success": "participant-joined",
    "peer.leave.success": "participant-left",
    "session.close.success": "room-ended",
}


@dataclass(frozen=True, kw_only=True)
class HmsConfig:
    # The access key is not secret (every app token carries it) but stays out of reprs.
    access_key: str = field(repr=False)
    app_secret: str = field(repr=False)
    # The template's Prebuilt subdomain, e.g. "clinic.app.100ms.live".
    prebuilt_domain: str
    # None: 100ms assigns the account's default template.
    template_id: str | None = None
    # Role names in the template for our host and guest.
    host_role: str = "host"
    guest_role: str = "guest"
    room_prefix: str = "visit-"
    api_base: str = API_BASE
    # Our secret header on webhook deliveries (configured on the 100ms webhook).
    webhook_header: str = "X-Webhook-Secret"
    webhook_secret: str | None = field(default=None, repr=False)
    # Set to register the webhook (with the secret header) on every room we create.
    webhook_url: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.access_key or not self.app_secret:
            raise ValueError("100ms needs access_key and app_secret")
        if not self.prebuilt_domain or "/" in self.prebuilt_domain:
            raise ValueError("100ms prebuilt_domain must be a host name")
        if not self.host_role or not self.guest_role or not self.webhook_header:
            raise ValueError("100ms role names and webhook_header must not be empty")
        if self.webhook_url and not self.webhook_secret:
            raise ValueError("100ms webhook_url needs a webhook_secret")
        if self.timeout <= 0:
            raise ValueError("100ms timeout must be positive")
        common.check_prefix(self.room_prefix)


class HmsProvider(common.HttpClient):
    """100ms behind the `VideoProvider` protocol (see the module docstring)."""

    name = "100ms"

    def __init__(
        self,
        config: HmsConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: common.Clock = common.utcnow,
    ) -> None:
        super().__init__(config.timeout, http)
        self.config = config
        self._key = common.oct_key(config.app_secret, "app_secret")
        self._clock = clock
        self._base = config.api_base.rstrip("/")

    # -- tokens ---------------------------------------------------------------------------

    def _claims(self, kind: str, ttl: timedelta) -> dict[str, Any]:
        now = self._clock()
        return {
            "access_key": self.config.access_key,
            "type": kind,
            "version": 2,
            "jti": str(uuid.uuid4()),
            "iat": common.epoch(now),
            "nbf": common.epoch(now),
            "exp": common.epoch(now + ttl),
        }

    def _role_name(self, role: ParticipantRole) -> str:
        return self.config.host_role if role == "host" else self.config.guest_role

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
        role_name = self._role_name(role)
        claims = self._claims("app", ttl)
        claims.update(room_id=room.room_id, user_id=identity, role=role_name)
        token = common.sign_hs256(claims, self._key)
        code = room.extra.get(_CODE + role_name)
        if code is None:
            raise ProviderError(f"100ms room has no room code for role {role_name!r}")
        query = urlencode({"name": display, "userId": identity}, quote_via=quote)
        return ParticipantToken(
            token=token,
            join_url=f"{self._prebuilt(code)}?{query}",
            role=role,
            expires_at=self._clock() + ttl,
        )

    def _prebuilt(self, code: str) -> str:
        return f"https://{self.config.prebuilt_domain}/meeting/{quote(code, safe='')}"

    # -- REST API -------------------------------------------------------------------------

    def _secrets(self, token: str) -> list[str | None]:
        """What must never reach a message: our credentials and the bearer token we sent."""
        config = self.config
        return [config.app_secret, config.access_key, config.webhook_secret, token]

    async def _post(
        self, path: str, what: str, body: Mapping[str, Any] | None = None
    ) -> tuple[httpx.Response, list[str | None]]:
        token = common.sign_hs256(self._claims("management", _MANAGEMENT_TTL), self._key)
        response = await common.send(
            self._http,
            "POST",
            self._base + path,
            what=what,
            bearer=token,
            time_limit=self.config.timeout,
            json_body=body if body is not None else {},
        )
        return response, self._secrets(token)

    async def _find_by_name(self, name: str) -> dict[str, Any]:
        """The room called `name` (the 409 fallback: create normally returns it itself)."""
        what = "100ms list rooms"
        token = common.sign_hs256(self._claims("management", _MANAGEMENT_TTL), self._key)
        response = await common.send(
            self._http,
            "GET",
            self._base + "/rooms",
            what=what,
            bearer=token,
            time_limit=self.config.timeout,
            params={"name": name},
        )
        secrets = self._secrets(token)
        if not response.is_success:
            common.raise_for_status(response, what, secrets, self._clock())
        listing = common.response_object(response, what, secrets).get("data")
        for item in listing if isinstance(listing, list) else []:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == name:
                return item
        raise ProviderError("100ms create room: name taken but the room was not found")

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        if max_participants is not None and max_participants < 1:
            raise ValueError("max_participants must be positive")
        name = common.room_name(self.config.room_prefix, key)
        body: dict[str, Any] = {"name": name, "description": "Virtual visit"}
        if self.config.template_id:
            body["template_id"] = self.config.template_id
        if max_participants:
            body["size"] = max_participants
        if self.config.webhook_url and self.config.webhook_secret:
            body["webhook"] = {
                "url": self.config.webhook_url,
                "headers": {self.config.webhook_header: self.config.webhook_secret},
            }
        what = "100ms create room"
        response, secrets = await self._post("/rooms", what, body)
        if response.status_code == 409:
            data = await self._find_by_name(name)
        elif response.is_success:
            data = common.response_object(response, what, secrets)
        else:
            common.raise_for_status(response, what, secrets, self._clock())
        room_id = common.text_field(data, "id")
        if room_id is None:
            raise ProviderError("100ms create room: response has no room id")
        return await self._with_codes(room_id, name)

    async def room(self, room_id: str) -> Room:
        return await self._with_codes(room_id, room_id)

    async def _with_codes(self, room_id: str, name: str) -> Room:
        codes = await self._room_codes(room_id)
        guest = codes.get(_CODE + self.config.guest_role)
        if guest is None:
            raise ProviderError(
                f"100ms room has no enabled room code for role {self.config.guest_role!r}"
            )
        return Room(
            provider=self.name,
            room_id=room_id,
            name=name,
            join_url=self._prebuilt(guest),
            extra=codes,
        )

    async def _room_codes(self, room_id: str) -> dict[str, str]:
        what = "100ms create room codes"
        response, secrets = await self._post(f"/room-codes/room/{quote(room_id, safe='')}", what)
        if not response.is_success:
            common.raise_for_status(response, what, secrets, self._clock())
        items = common.response_object(response, what, secrets).get("data")
        codes: dict[str, str] = {}
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or item.get("enabled") is False:
                continue
            role, code = common.text_field(item, "role"), common.text_field(item, "code")
            if role and code:
                codes[_CODE + role] = code
        return codes

    async def close_room(self, room: Room) -> None:
        room_path = quote(room.room_id, safe="")
        what = "100ms end active room"
        response, secrets = await self._post(
            f"/active-rooms/{room_path}/end-room",
            what,
            {"reason": "The visit has ended", "lock": True},
        )
        # 404: no active session (or no room) — nothing to end.
        if not response.is_success and response.status_code != 404:
            common.raise_for_status(response, what, secrets, self._clock())
        what = "100ms disable room"
        response, secrets = await self._post(f"/rooms/{room_path}", what, {"enabled": False})
        if not response.is_success and response.status_code != 404:
            common.raise_for_status(response, what, secrets, self._clock())

    # -- webhooks -------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        secret = self.config.webhook_secret
        if not secret:
            raise WebhookRejected("100ms webhooks are not configured (no webhook_secret)")
        got = common.header(headers, self.config.webhook_header) or ""
        if not hmac.compare_digest(got.encode(), secret.encode()):
            raise WebhookRejected("webhook secret is missing or wrong")
        event = common.json_object(body)
        kind = _EVENTS.get(str(event.get("type")))
        if kind is None:
            return []
        data = event.get("data")
        if not isinstance(data, dict):
            raise WebhookRejected("webhook event has no data")
        room_id = common.text_field(data, "room_id")
        if room_id is None:
            raise WebhookRejected("webhook event has no room_id")
        stamp = {
            "participant-joined": "joined_at",
            "participant-left": "left_at",
            "room-ended": "session_stopped_at",
        }[kind]
        at = (
            common.parse_time(data.get(stamp))
            or common.parse_time(event.get("timestamp"))
            or self._clock()
        )
        event_id = common.text_field(event, "id")
        if kind == "room-ended":
            return [RoomEvent(self.name, kind, room_id, at, event_id=event_id)]
        return [
            RoomEvent(
                provider=self.name,
                kind=kind,
                room_id=room_id,
                at=at,
                participant_identity=common.text_field(data, "user_id"),
                participant_display=common.text_field(data, "user_name"),
                participant_sid=common.text_field(data, "peer_id"),
                event_id=event_id,
            )
        ]
