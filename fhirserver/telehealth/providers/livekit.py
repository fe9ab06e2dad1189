"""LiveKit (self-hosted or Cloud): RoomService over Twirp JSON, HS256 access tokens, signed
webhooks.

Followed docs (docs.livekit.io):
- "Room management" (/server/room-management): server APIs are Twirp — `POST
  <host>/twirp/livekit.RoomService/<Method>` with a JSON body (snake_case or camelCase
  keys accepted) and `Authorization: Bearer <access token>`. CreateRoom takes `name`,
  `empty_timeout`, `max_participants` and returns the existing room when the name is
  taken (the server's room allocator loads it), so create is idempotent on the name.
  DeleteRoom needs the `roomCreate` grant and answers Twirp `not_found` (HTTP 404) for a
  room that does not exist: close treats that as success.
- "Tokens & grants" (/home/concepts/authentication): an access token is an HS256 JWT with
  `iss` = API key, `sub` = participant identity, `name`, `nbf`, `exp`, and a `video`
  grant (`room`, `roomJoin`, `canPublish`, `canSubscribe`, `roomAdmin`, `roomCreate`).
- "Webhooks" (/server/webhooks): a POST with `Content-Type: application/webhook+json`
  and an `Authorization` header holding a JWT signed with the API secret whose `sha256`
  claim is the base64 SHA-256 of the body; the body is a WebhookEvent (`event`, `room`,
  `participant`, `id`, `createdAt`; int64 fields may come as strings in protobuf JSON).

Rooms are named `room_prefix` + a hash of the key (opaque, no PII: LiveKit logs room
names). LiveKit closes a room nobody joined after `empty_timeout` seconds and, by default
(`room.auto_create`), recreates it when someone joins with a valid token: provisioning days
ahead therefore works, but the room's `max_participants` only holds for the room we
created. A `room_finished` webhook can arrive for such an idle room before the visit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

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

_SERVICE = "/twirp/livekit.RoomService/"
# Token for our own RoomService calls: short, one call's worth.
_API_TOKEN_TTL = timedelta(minutes=5)
_EVENTS: dict[str, EventKind] = {
    "participant_joined": "participant-joined",
    "participant_left": "participant-left",
    "room_finished": "room-ended",
}
# LiveKit Meet (the hosted example client) joins any server given its URL and a token.
DEFAULT_JOIN_URL_TEMPLATE = "https://meet.livekit.io/custom?liveKitUrl={ws_url}&token={token}"


@dataclass(frozen=True, kw_only=True)
class LiveKitConfig:
    # The server, as http(s):// or ws(s):// — both forms are derived from it.
    url: str
    # The key is not secret (it is `iss` in every participant token) but stays out of
    # reprs and messages all the same.
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    room_prefix: str = "visit-"
    # Seconds an empty room lives before LiveKit closes it (0: the server's default).
    empty_timeout: int = 900
    # Browser join URL; {ws_url} and {token} are filled in URL-encoded.
    join_url_template: str = DEFAULT_JOIN_URL_TEMPLATE
    timeout: float = 10.0
    # Clock skew tolerated on webhook tokens, in seconds.
    leeway: int = 30

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_secret:
            raise ValueError("LiveKit needs api_key and api_secret")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            raise ValueError("LiveKit url must be http(s):// or ws(s):// with a host")
        if self.empty_timeout < 0 or self.timeout <= 0 or self.leeway < 0:
            raise ValueError("LiveKit timeouts must not be negative")
        common.check_prefix(self.room_prefix)

    def _with_scheme(self, secure: str, plain: str) -> str:
        parts = urlsplit(self.url)
        scheme = secure if parts.scheme in ("https", "wss") else plain
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))

    @property
    def api_url(self) -> str:
        return self._with_scheme("https", "http")

    @property
    def ws_url(self) -> str:
        return self._with_scheme("wss", "ws")


class LiveKitProvider(common.HttpClient):
    """LiveKit behind the `VideoProvider` protocol (see the module docstring)."""

    name = "livekit"

    def __init__(
        self,
        config: LiveKitConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: common.Clock = common.utcnow,
    ) -> None:
        super().__init__(config.timeout, http)
        self.config = config
        self._key = common.oct_key(config.api_secret, "api_secret")
        self._clock = clock

    # -- tokens ---------------------------------------------------------------------------

    def _sign(self, sub: str | None, grant: Mapping[str, Any], ttl: timedelta, **extra: Any) -> str:
        now = self._clock()
        claims: dict[str, Any] = {
            "iss": self.config.api_key,
            "nbf": common.epoch(now),
            "exp": common.epoch(now + ttl),
            "video": dict(grant),
            **extra,
        }
        if sub is not None:
            claims["sub"] = sub
        return common.sign_hs256(claims, self._key)

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
        grant = {
            "room": room.name,
            "roomJoin": True,
            "canPublish": True,
            "canSubscribe": True,
            "canPublishData": True,
            # Host moderates: mute or remove participants, end the room.
            "roomAdmin": role == "host",
        }
        expires = self._clock() + ttl
        token = self._sign(identity, grant, ttl, name=display)
        join_url = self.config.join_url_template.format(
            ws_url=quote(self.config.ws_url, safe=""), token=quote(token, safe="")
        )
        return ParticipantToken(token=token, join_url=join_url, role=role, expires_at=expires)

    # -- RoomService ----------------------------------------------------------------------

    async def _call(self, method: str, room: str, body: Mapping[str, Any]) -> httpx.Response:
        token = self._sign(
            None, {"roomCreate": True, "roomAdmin": True, "room": room}, _API_TOKEN_TTL
        )
        return await common.send(
            self._http,
            "POST",
            self.config.api_url + _SERVICE + method,
            what=f"LiveKit {method}",
            bearer=token,
            time_limit=self.config.timeout,
            json_body=body,
        )

    def _secrets(self, response: httpx.Response) -> list[str | None]:
        sent = response.request.headers.get("Authorization", "").removeprefix("Bearer ")
        return [self.config.api_secret, self.config.api_key, sent or None]

    def _room(self, name: str, sid: str | None) -> Room:
        return Room(
            provider=self.name,
            room_id=name,
            name=name,
            join_url=self.config.ws_url,
            extra={"sid": sid} if sid else {},
        )

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        if max_participants is not None and max_participants < 1:
            raise ValueError("max_participants must be positive")
        name = common.room_name(self.config.room_prefix, key)
        body = {
            "name": name,
            "empty_timeout": self.config.empty_timeout,
            "max_participants": max_participants or 0,
        }
        response = await self._call("CreateRoom", name, body)
        if response.status_code == 409:
            # Twirp already_exists: not what CreateRoom answers today (it returns the
            # existing room), but the same outcome for us.
            return self._room(name, None)
        if not response.is_success:
            common.raise_for_status(
                response, "LiveKit CreateRoom", self._secrets(response), self._clock()
            )
        data = common.response_object(response, "LiveKit CreateRoom", self._secrets(response))
        got = data.get("name")
        if got not in (None, name):
            raise ProviderError("LiveKit CreateRoom returned a different room")
        return self._room(name, common.text_field(data, "sid"))

    async def room(self, room_id: str) -> Room:
        return self._room(room_id, None)

    async def close_room(self, room: Room) -> None:
        response = await self._call("DeleteRoom", room.name, {"room": room.name})
        if response.is_success or response.status_code == 404:
            return  # deleted now, or already gone / never materialised (Twirp not_found)
        common.raise_for_status(
            response, "LiveKit DeleteRoom", self._secrets(response), self._clock()
        )

    # -- webhooks -------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        auth = (common.header(headers, "Authorization") or "").strip()
        if auth[:7].lower() == "bearer ":
            auth = auth[7:].strip()
        if not auth:
            raise WebhookRejected("webhook has no Authorization token")
        claims = common.verify_hs256(auth, self._key)
        if not hmac.compare_digest(
            str(claims.get("iss", "")).encode(), self.config.api_key.encode()
        ):
            raise WebhookRejected("webhook token was not issued by our API key")
        common.check_time_claims(claims, self._clock(), self.config.leeway)
        claimed = claims.get("sha256")
        if not isinstance(claimed, str) or not claimed:
            raise WebhookRejected("webhook token carries no body hash")
        try:
            claimed_digest = base64.b64decode(claimed, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("webhook body hash is malformed") from None
        if not hmac.compare_digest(claimed_digest, hashlib.sha256(body).digest()):
            raise WebhookRejected("webhook body does not match its signature")
        return self._events(common.json_object(body))

    def _events(self, data: dict[str, Any]) -> list[RoomEvent]:
        kind = _EVENTS.get(str(data.get("event")))
        if kind is None:
            return []
        room = data.get("room")
        room_name = common.text_field(room, "name") if isinstance(room, dict) else None
        if room_name is None:
            raise WebhookRejected("webhook event has no room name")
        at = common.parse_time(data.get("createdAt", data.get("created_at")))
        event_id = common.text_field(data, "id")
        if kind == "room-ended":
            return [RoomEvent(self.name, kind, room_name, at or self._clock(), event_id=event_id)]
        participant = data.get("participant")
        if not isinstance(participant, dict):
            raise WebhookRejected("webhook event has no participant")
        return [
            RoomEvent(
                provider=self.name,
                kind=kind,
                room_id=room_name,
                at=at or self._clock(),
                participant_identity=common.text_field(participant, "identity"),
                participant_display=common.text_field(participant, "name"),
                participant_sid=common.text_field(participant, "sid"),
                event_id=event_id,
            )
        ]
