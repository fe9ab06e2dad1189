"""Daily: private rooms through the REST API, self-signed meeting tokens, webhooks signed
with HMAC-SHA256 over the timestamp and the body.

Followed docs (docs.daily.co):
- "The room object" (/reference/rest-api/rooms): `{id, name, api_created, privacy, url,
  created_at, config}`, joined at `https://<domain>.daily.co/<room>`; "Create room"
  (`POST /v1/rooms` with `name`, `privacy` and `properties` — `exp`, after which nobody
  can join, `eject_at_room_exp`, which removes those still in the room at `exp`, and
  `max_participants`). A taken name is refused (400 `invalid-request-error` "already
  exists"; 409 is treated alike), so create then reads "Get room config" (`GET
  /v1/rooms/:name`) and is idempotent on the name. "Delete room"
  (`DELETE /v1/rooms/:name`) answers 404 `not-found` for a room that is gone: success.
  Every call takes the API key as `Authorization: Bearer`; errors are
  `{"error": <type>, "info": <text>}`.
- "Meeting tokens" (/reference/rest-api/meeting-tokens) and "Self-signing tokens"
  (/guides/privacy-and-security/self-signing-tokens): the properties `room_name`,
  `is_owner`, `user_name`, `user_id`, `nbf`, `exp` of `POST /v1/meeting-tokens` can be
  signed locally instead — an HS256 JWT with the API key as secret and the abbreviated
  claims `r`, `o`, `u`, `ud`, `nbf`, `exp`, plus `iat` and `d` (the domain id). We sign
  locally: `participant_token` is synchronous and makes no call. We do not set
  `eject_at_token_exp`: the token's ttl is how long it admits, not how long the visit
  lasts. A token is used as `https://<domain>.daily.co/<room>?t=<token>` (Daily Prebuilt).
- "Webhooks" (/reference/rest-api/webhooks): the webhook's `hmac` secret is a base64
  string ("This secret must be BASE-64 encoded"); each delivery carries
  `X-Webhook-Timestamp` and `X-Webhook-Signature` = base64 HMAC-SHA256(base64-decoded
  secret, "{timestamp}.{raw body}"). Creating a webhook first POSTs an unsigned
  `{"test": "test"}` to check the endpoint answers 200: that body alone is accepted
  unsigned, and records nothing. The timestamp is read as epoch seconds.
  Events (/reference/rest-api/webhooks/events/participant-joined and its siblings):
  `participant.joined` and `participant.left` (`payload` {room, user_id (from the meeting
  token), user_name, session_id, joined_at, owner, "the quality of the user's network",
  and on leaving duration}), `meeting.ended`
  ({room, start_ts, end_ts}); every event has `version`, `type`, `id`, `payload` and
  `event_ts` (when the webhook was sent).
- Recordings: a token's `enable_recording` (`er`: "cloud") lets its holder record, and
  `start_cloud_recording` (`sr`) starts the cloud recording when the holder joins ("Self-
  signing tokens" abbreviations). Only a host token asked for with `record=True` carries
  them; rooms are created without `enable_recording`, so no other token can record.
  "Recording ready to download" (/reference/rest-api/webhooks/events/recording-ready-to-
  download): `recording.ready-to-download` with `payload` {type ("cloud" or
  "raw-tracks"), recording_id, room_name, start_ts, status, max_participants, duration,
  s3_key}; the recording is then the API's `GET /v1/recordings/:id` (an access link to
  the file comes from `GET /v1/recordings/:id/access-link`, with the API key), and
  "Delete recording" is `DELETE /v1/recordings/:id` (404 when gone).

The network quality in participant events is read from `networkQualityState`, the name
and values ('good' | 'warning' | 'bad' | 'unknown') of the DailyParticipant object
(/reference/daily-js/types/daily-participant) the webhook payload reports from; "unknown"
and anything else are left out.

Rooms are `private` (a token is needed to join) and expire `room_ttl` after they are
provisioned; a visit booked further ahead than that needs a longer `room_ttl`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from fhirserver.telehealth.providers import _common as common
from fhirserver.telehealth.providers.base import (
    NETWORK_QUALITIES,
    EventKind,
    NetworkQuality,
    ParticipantRole,
    ParticipantToken,
    ProviderError,
    Recording,
    Room,
    RoomEvent,
    WebhookRejected,
)

API_BASE = "https://api.daily.co/v1"
_EVENTS: dict[str, EventKind] = {
    "participant.joined": "participant-joined",
    "participant.left": "participant-left",
    "meeting.ended": "room-ended",
    "recording.ready-to-download": "recording-ready",
}
# What Daily POSTs, unsigned, when a webhook is created (the endpoint check).
_ENDPOINT_CHECK = {"test": "test"}


@dataclass(frozen=True, kw_only=True)
class DailyConfig:
    api_key: str = field(repr=False)
    # The account's subdomain: "clinic" for https://clinic.daily.co.
    domain: str
    # The domain id (GET /v1/ "domain_id"): self-signed tokens must carry it.
    domain_id: str
    # The webhook's `hmac` secret, base64 as Daily shows it.
    webhook_hmac: str | None = field(default=None, repr=False)
    room_prefix: str = "visit-"
    room_ttl: timedelta = timedelta(days=30)
    api_base: str = API_BASE
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("Daily needs api_key")
        if not self.domain or not self.domain.replace("-", "").isalnum():
            raise ValueError("Daily domain must be the subdomain, e.g. clinic for clinic.daily.co")
        if not self.domain_id:
            raise ValueError("Daily needs domain_id (to sign meeting tokens)")
        if self.webhook_hmac is not None:
            try:
                base64.b64decode(self.webhook_hmac, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("Daily webhook_hmac must be base64") from None
        if self.room_ttl <= timedelta(0) or self.timeout <= 0:
            raise ValueError("Daily room_ttl and timeout must be positive")
        common.check_prefix(self.room_prefix)


class DailyProvider(common.HttpClient):
    """Daily behind the `VideoProvider` protocol (see the module docstring)."""

    name = "daily"

    def __init__(
        self,
        config: DailyConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: common.Clock = common.utcnow,
    ) -> None:
        super().__init__(config.timeout, http)
        self.config = config
        self._key = common.oct_key(config.api_key, "api_key")
        self._hook_key = base64.b64decode(config.webhook_hmac) if config.webhook_hmac else None
        self._clock = clock
        self._base = config.api_base.rstrip("/")

    # -- rooms ----------------------------------------------------------------------------

    def _room_url(self, name: str) -> str:
        return f"https://{self.config.domain}.daily.co/{quote(name, safe='')}"

    async def _call(
        self, method: str, path: str, what: str, body: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        return await common.send(
            self._http,
            method,
            self._base + path,
            what=what,
            bearer=self.config.api_key,
            time_limit=self.config.timeout,
            json_body=body,
        )

    def _secrets(self) -> list[str | None]:
        return [self.config.api_key, self.config.webhook_hmac]

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        if max_participants is not None and max_participants < 1:
            raise ValueError("max_participants must be positive")
        name = common.room_name(self.config.room_prefix, key)
        properties: dict[str, Any] = {
            "exp": common.epoch(self._clock() + self.config.room_ttl),
            "eject_at_room_exp": True,
        }
        if max_participants:
            properties["max_participants"] = max_participants
        what = "Daily create room"
        body = {"name": name, "privacy": "private", "properties": properties}
        response = await self._call("POST", "/rooms", what, body)
        if response.status_code in (400, 409):
            # Taken by the room we created before (create is retried), or a bad request.
            existing = await self._call("GET", f"/rooms/{quote(name, safe='')}", "Daily get room")
            if existing.is_success:
                response = existing
        if not response.is_success:
            common.raise_for_status(response, what, self._secrets(), self._clock())
        data = common.response_object(response, what, self._secrets())
        if data.get("name") != name:
            raise ProviderError("Daily create room returned a different room")
        return await self.room(name)

    async def room(self, room_id: str) -> Room:
        return Room(
            provider=self.name, room_id=room_id, name=room_id, join_url=self._room_url(room_id)
        )

    async def close_room(self, room: Room) -> None:
        what = "Daily delete room"
        response = await self._call("DELETE", f"/rooms/{quote(room.name, safe='')}", what)
        if response.is_success or response.status_code == 404:
            return  # deleted now, or already gone / never created
        common.raise_for_status(response, what, self._secrets(), self._clock())

    # -- tokens ---------------------------------------------------------------------------

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
        now = self._clock()
        expires = now + ttl
        claims = {
            "r": room.name,
            "d": self.config.domain_id,
            "o": role == "host",
            "u": display,
            "ud": identity,
            "iat": common.epoch(now),
            "nbf": common.epoch(now),
            "exp": common.epoch(expires),
        }
        if record:
            claims |= {"er": "cloud", "sr": True}
        token = common.sign_hs256(claims, self._key)
        return ParticipantToken(
            token=token,
            join_url=f"{self._room_url(room.name)}?t={token}",
            role=role,
            expires_at=expires,
        )

    # -- recordings -----------------------------------------------------------------------

    async def delete_recording(self, recording: Recording, keep: Collection[str] = ()) -> bool:
        what = "Daily delete recording"
        path = f"/recordings/{quote(recording.recording_id, safe='')}"
        response = await self._call("DELETE", path, what)
        if response.is_success or response.status_code == 404:
            return True  # deleted now, or already gone
        common.raise_for_status(response, what, self._secrets(), self._clock())

    # -- webhooks -------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        got = (common.header(headers, "X-Webhook-Signature") or "").strip()
        if not got and _is_endpoint_check(body):
            return []
        if self._hook_key is None:
            raise WebhookRejected("Daily webhooks are not configured (no webhook_hmac)")
        raw = (common.header(headers, "X-Webhook-Timestamp") or "").strip()
        digest = common.hmac_sha256(self._hook_key, raw.encode() + b"." + body)
        expected = base64.b64encode(digest).decode()
        if not hmac.compare_digest(got.encode(), expected.encode()):
            raise WebhookRejected("webhook signature is missing or wrong")
        common.signed_at(raw, self._clock(), common.REPLAY_WINDOW)
        return self._events(common.json_object(body))

    def _events(self, event: dict[str, Any]) -> list[RoomEvent]:
        kind = _EVENTS.get(str(event.get("type")))
        if kind is None:
            return []
        data = event.get("payload")
        if not isinstance(data, dict):
            raise WebhookRejected("webhook event has no payload")
        if kind == "recording-ready":
            return [self._recording(data, common.text_field(event, "id"))]
        room = common.text_field(data, "room")
        if room is None:
            raise WebhookRejected("webhook event has no room")
        event_id = common.text_field(event, "id")
        sent_at = common.parse_time(event.get("event_ts"))
        if kind == "room-ended":
            ended = common.parse_time(data.get("end_ts")) or sent_at or self._clock()
            return [RoomEvent(self.name, kind, room, ended, event_id=event_id)]
        if kind == "participant-left":
            at = _left_at(data)
        else:
            at = common.parse_time(data.get("joined_at"))
        return [
            RoomEvent(
                provider=self.name,
                kind=kind,
                room_id=room,
                at=at or sent_at or self._clock(),
                participant_identity=common.text_field(data, "user_id"),
                participant_display=common.text_field(data, "user_name"),
                participant_sid=common.text_field(data, "session_id"),
                event_id=event_id,
                network_quality=_network_quality(data.get("networkQualityState")),
            )
        ]

    def _recording(self, data: Mapping[str, Any], event_id: str | None) -> RoomEvent:
        room = common.text_field(data, "room_name")
        recording_id = common.text_field(data, "recording_id")
        if room is None or recording_id is None:
            raise WebhookRejected("recording event has no room_name or recording_id")
        started = common.parse_time(data.get("start_ts"))
        duration = data.get("duration")
        recording = Recording(
            recording_id=recording_id,
            url=f"{self._base}/recordings/{quote(recording_id, safe='')}",
            # Cloud recordings are MP4; raw-tracks recordings are WebM files per track.
            content_type="video/webm" if data.get("type") == "raw-tracks" else "video/mp4",
            started=started,
            duration=common.recording_duration(duration),
        )
        at = started or self._clock()
        return RoomEvent(
            self.name, "recording-ready", room, at, event_id=event_id, recording=recording
        )


def _network_quality(value: object) -> NetworkQuality | None:
    for quality in NETWORK_QUALITIES:
        if value == quality:
            return quality
    return None


def _left_at(data: Mapping[str, Any]) -> datetime | None:
    """joined_at + duration (seconds), the time the participant left, when both are given."""
    joined, duration = data.get("joined_at"), data.get("duration")
    if isinstance(joined, bool) or isinstance(duration, bool):
        return None
    if not isinstance(joined, int | float) or not isinstance(duration, int | float):
        return None
    return common.parse_time(joined + duration)


def _is_endpoint_check(body: bytes) -> bool:
    try:
        return bool(json.loads(body) == _ENDPOINT_CHECK)
    except (ValueError, UnicodeDecodeError):
        return False
