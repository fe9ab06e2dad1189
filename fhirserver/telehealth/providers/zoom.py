"""Zoom Video SDK: session JWTs signed locally, sessions ended through the Video SDK REST
API (when API credentials are given), webhooks signed with HMAC-SHA256 and a timestamp.

Followed docs (developers.zoom.us):
- "Authorize" (/docs/video-sdk/auth/): a Video SDK JWT is HS256, signed with the SDK
  secret, with `app_key` (the SDK key), `tpc` (the session name, at most 200 characters,
  case-insensitive), `role_type` (1 host, 0 participant; a number), `version` 1, `iat`,
  `exp`, and optionally `session_key` (at most 36 characters) and `user_identity` (at
  most 35). `exp` must lie between 30 minutes and 48 hours after `iat`, so a token asked
  for with a shorter ttl is signed for 30 minutes and `ParticipantToken.expires_at` says
  so. Sessions (e.g. /docs/video-sdk/windows/sessions/): there is no "create room" — the
  first `join` with a session name creates the session, and the name is free again once
  the session ends; hence `create_room` makes no network call.
- "Make API requests" (/docs/build/api-request/): the Video SDK REST API
  (`https://api.zoom.us/v2/videosdk/...`) takes an API JWT (`iss` the API key, `exp`;
  HS256 with the API secret — not the SDK key and secret) as the bearer token.
  "List sessions" `GET /videosdk/sessions?type=live&from&to` finds the live session of a
  name, and "Update session status" `PUT /videosdk/sessions/{sessionId}/status`
  `{"action": "end"}` ends it. A session id that begins with "/" or contains "//" is
  URL-encoded twice (the Zoom API's rule for UUIDs). Without API credentials, or for an
  account whose plan does not allow the API, `close_room` cannot end anything: the
  session ends when its last participant leaves, and tokens stop admitting at `exp`.
- Webhooks ("Using webhooks", /docs/api/webhooks/ "Verify webhook events" and "Validate
  your webhook endpoint", pointed to by the changelog /changelog/platform/webhook-url-
  validation; the formula as Zoom's own webhook skill runbook restates it): each request
  carries `x-zm-request-timestamp` (epoch seconds) and `x-zm-signature` = "v0=" + hex
  HMAC-SHA256(secret token, "v0:{timestamp}:{raw body}"). Registering the endpoint, and
  every 72 hours after, Zoom sends an `endpoint.url_validation` event whose
  `payload.plainToken` must be answered with `{"plainToken", "encryptedToken": hex
  HMAC-SHA256(secret token, plainToken)}` (`webhook_challenge`); we answer it only when
  its signature verifies, as Zoom's sample does. Video SDK events (changelog
  /changelog/video-sdk/october-25-2021 and later): `session.user_joined`,
  `session.user_left` (`payload.object` {id, session_id, session_name, session_key,
  user {id, name, user_key (the token's user_identity), participant_uuid}}),
  `session.ended`; `event_ts` is in milliseconds. The times `user.join_time` /
  `user.leave_time` / `end_time` are read when present (as in the Meetings events),
  else `event_ts`.

Recordings (changelog /changelog/video-sdk/december-18-2021, "Cloud recording APIs and
session webhooks"): `session.recording_completed` carries `payload.object` {session_id,
session_name, session_key, start_time, recording_files [{id, recording_start,
recording_end, file_type (MP4, M4A, TRANSCRIPT, CHAT, ...), file_size, download_url,
status, recording_type}]} and a `download_token` beside it. Every file with an id becomes
one `recording-ready` event: the video (MP4) and audio (M4A), and the chat, transcript,
captions and timeline Zoom keeps beside them, since all of them record the visit and fall
under the same Consent. The `download_token` is a credential and is never kept: the
`download_url` (without any query or user information) is fetched with an API token. A
recording's id is "{session id}:{file id}" (Zoom session ids are base64, never ":", and a
session id that holds one is dropped). A recording no Consent allows is deleted with
"Delete session's recordings", `DELETE /videosdk/sessions/{sessionId}/recordings
?action=delete`: every file of the session at once, including the captions and timelines
Zoom lists without an id, and for good (the default action, trash, keeps them 30 days);
when files of the session are linked to the record, only the one file
(`DELETE /videosdk/sessions/{sessionId}/recordings/{recordingId}?action=delete`).
That needs API credentials. The cloud recording is started by the host from the
Video SDK UI: a Zoom token cannot grant or withhold it, so a recording no Consent allows
is deleted when it arrives (webhooks.py).

Zoom puts no delivery id in the body, so `RoomEvent.event_id` is a hash of the signed
body: a retried or replayed delivery (same body) is recorded once.

Identities: `user_identity` holds at most 35 characters, and a reference such as
"Practitioner/<uuid>" is longer. So a reference whose id is a UUID is sent as
"<Type>:<22 base64url characters>" (":" never occurs in a reference, so the form cannot
be mistaken for one) and turned back on the way in; an identity that fits is sent as is;
one that neither fits nor compresses is left out (webhooks then name that participant by
display name only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
from joserfc.jwk import OctKey

from fhirserver.telehealth.providers import _common as common
from fhirserver.telehealth.providers.base import (
    EventKind,
    ParticipantRole,
    ParticipantToken,
    Recording,
    Room,
    RoomEvent,
    WebhookRejected,
)

API_BASE = "https://api.zoom.us/v2"
# Zoom refuses SDK JWTs valid for less than this (auth page: exp at least 1800 s after iat).
MIN_SDK_TOKEN_TTL = timedelta(minutes=30)
_API_TOKEN_TTL = timedelta(minutes=5)
_SESSION_KEY_MAX = 36
_USER_IDENTITY_MAX = 35
_LIST_PAGES = 10  # live sessions listed per close, at most 10 x 300
_EVENTS: dict[str, EventKind] = {
    "session.user_joined": "participant-joined",
    "session.user_left": "participant-left",
    "session.ended": "room-ended",
    "session.recording_completed": "recording-ready",
}
# What each recording file is: its media type and title (an unknown type is a file).
_FILE_TYPES = {
    "MP4": ("video/mp4", "Recording"),
    "M4A": ("audio/mp4", "Audio recording"),
    "CHAT": ("text/plain", "Chat"),
    "TRANSCRIPT": ("text/vtt", "Transcript"),
    "CC": ("text/vtt", "Closed captions"),
    "TIMELINE": ("application/json", "Timeline"),
    "TB": ("application/json", "Timeline"),
    "CSV": ("text/csv", "Poll results"),
    "SUMMARY": ("application/json", "Summary"),
}
_OTHER_FILE = ("application/octet-stream", "File of the recording")
_VALIDATION = "endpoint.url_validation"
_FOR_GOOD = {"action": "delete"}


@dataclass(frozen=True, kw_only=True)
class ZoomConfig:
    # The SDK key is not secret (every token carries it) but stays out of reprs.
    sdk_key: str = field(repr=False)
    sdk_secret: str = field(repr=False)
    # The page (ours or the clinic's) that runs the Video SDK UI toolkit; participants
    # are sent to it with #session=...&token=...&name=... in the fragment.
    join_page: str
    # Video SDK REST API credentials (not the SDK ones); without them close_room cannot
    # end a session.
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    # The webhook "secret token" of the Video SDK app's event subscription.
    webhook_secret: str | None = field(default=None, repr=False)
    # Short, so that the session name also fits the 36-character session_key.
    room_prefix: str = "v-"
    api_base: str = API_BASE
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.sdk_key or not self.sdk_secret:
            raise ValueError("Zoom Video SDK needs sdk_key and sdk_secret")
        if bool(self.api_key) != bool(self.api_secret):
            raise ValueError("Zoom Video SDK API needs both api_key and api_secret (or neither)")
        parts = urlsplit(self.join_page)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ValueError("Zoom join_page must be an http(s) URL without a fragment")
        if self.timeout <= 0:
            raise ValueError("Zoom timeout must be positive")
        common.check_prefix(self.room_prefix)
        if len(self.room_prefix) > _SESSION_KEY_MAX - 32:
            raise ValueError("Zoom room_prefix must be at most 4 characters (session_key limit)")


def user_identity(identity: str) -> str | None:
    """`identity` as Zoom's `user_identity` (module docstring), or None if it cannot fit."""
    if len(identity) <= _USER_IDENTITY_MAX and ":" not in identity:
        return identity
    kind, _, local = identity.partition("/")
    try:
        parsed = uuid.UUID(local)
    except ValueError:
        return None
    compact = f"{kind}:" + base64.urlsafe_b64encode(parsed.bytes).decode().rstrip("=")
    # Only the canonical spelling, so that decoding gives back exactly `identity`.
    if not kind.isalpha() or str(parsed) != local or len(compact) > _USER_IDENTITY_MAX:
        return None
    return compact


def identity_from_user_key(user_key: str | None) -> str | None:
    """The identity a `user_identity` came from (the inverse of `user_identity`)."""
    if not user_key:
        return None
    kind, colon, packed = user_key.partition(":")
    if not colon:
        return user_key
    try:
        raw = base64.urlsafe_b64decode(packed + "==")
    except (binascii.Error, ValueError):
        return None
    if not kind.isalpha() or len(packed) != 22 or len(raw) != 16:
        return None
    return f"{kind}/{uuid.UUID(bytes=raw)}"


def _credential_free(location: str) -> str | None:
    """An https URL without its query or user information (where a download token may
    ride); None for anything else."""
    parts = urlsplit(location)
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme != "https" or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}{f':{port}' if port is not None else ''}{parts.path}"


def _session_path(session_id: str) -> str:
    once = quote(session_id, safe="")
    return quote(once, safe="") if session_id.startswith("/") or "//" in session_id else once


class ZoomProvider(common.HttpClient):
    """Zoom Video SDK behind the `VideoProvider` protocol (see the module docstring)."""

    name = "zoom-video-sdk"

    def __init__(
        self,
        config: ZoomConfig,
        *,
        http: httpx.AsyncClient | None = None,
        clock: common.Clock = common.utcnow,
    ) -> None:
        super().__init__(config.timeout, http)
        self.config = config
        self._key = common.oct_key(config.sdk_secret, "sdk_secret")
        self._api_jwt_key = (
            common.oct_key(config.api_secret, "api_secret") if config.api_secret else None
        )
        self._clock = clock
        self._base = config.api_base.rstrip("/")

    # -- rooms ----------------------------------------------------------------------------

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        # The first join creates the session; the participant cap is an account setting.
        if max_participants is not None and max_participants < 1:
            raise ValueError("max_participants must be positive")
        return await self.room(common.room_name(self.config.room_prefix, key))

    async def room(self, room_id: str) -> Room:
        return Room(
            provider=self.name, room_id=room_id, name=room_id, join_url=self.config.join_page
        )

    async def close_room(self, room: Room) -> None:
        key = self._api_jwt_key
        if key is None:
            return None  # nothing to call: see the module docstring
        for session_id in await self._live_sessions(key, room.name):
            what = "Zoom end session"
            response, secrets = await self._api(
                key,
                "PUT",
                f"/videosdk/sessions/{_session_path(session_id)}/status",
                what,
                json_body={"action": "end"},
            )
            # 404: the session ended meanwhile (its last participant left).
            if not response.is_success and response.status_code != 404:
                common.raise_for_status(response, what, secrets, self._clock())

    async def _live_sessions(self, key: OctKey, name: str) -> list[str]:
        """The ids of the live sessions called `name` (names are case-insensitive)."""
        now = self._clock()
        params = {
            "type": "live",
            "from": (now - timedelta(days=2)).date().isoformat(),
            "to": (now + timedelta(days=1)).date().isoformat(),
            "page_size": "300",
        }
        found: list[str] = []
        what = "Zoom list sessions"
        for _ in range(_LIST_PAGES):
            response, secrets = await self._api(
                key, "GET", "/videosdk/sessions", what, params=params
            )
            if not response.is_success:
                common.raise_for_status(response, what, secrets, self._clock())
            data = common.response_object(response, what, secrets)
            sessions = data.get("sessions")
            for item in sessions if isinstance(sessions, list) else []:
                if not isinstance(item, dict):
                    continue
                session_id = common.text_field(item, "id")
                if session_id and str(item.get("session_name", "")).lower() == name.lower():
                    found.append(session_id)
            page = common.text_field(data, "next_page_token")
            if page is None:
                break
            params = params | {"next_page_token": page}
        return found

    async def _api(
        self,
        key: OctKey,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[httpx.Response, list[str | None]]:
        now = self._clock()
        claims = {
            "iss": self.config.api_key,
            "iat": common.epoch(now),
            "exp": common.epoch(now + _API_TOKEN_TTL),
        }
        token = common.sign_hs256(claims, key)
        response = await common.send(
            self._http,
            method,
            self._base + path,
            what=what,
            bearer=token,
            time_limit=self.config.timeout,
            json_body=json_body,
            params=params,
        )
        return response, self._secrets(token)

    def _secrets(self, token: str | None = None) -> list[str | None]:
        """What must never reach a message: our credentials and the bearer token we sent."""
        config = self.config
        return [
            config.sdk_secret,
            config.sdk_key,
            config.api_secret,
            config.api_key,
            config.webhook_secret,
            token,
        ]

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
        expires = now + max(ttl, MIN_SDK_TOKEN_TTL)
        claims: dict[str, Any] = {
            "app_key": self.config.sdk_key,
            "tpc": room.name,
            "role_type": 1 if role == "host" else 0,
            "version": 1,
            "iat": common.epoch(now),
            "exp": common.epoch(expires),
        }
        if len(room.name) <= _SESSION_KEY_MAX:
            claims["session_key"] = room.name
        packed = user_identity(identity)
        if packed is not None:
            claims["user_identity"] = packed
        token = common.sign_hs256(claims, self._key)
        # In the fragment: browsers do not send it to servers or in Referer headers, so
        # the token stays out of access logs.
        fragment = urlencode(
            {"session": room.name, "token": token, "name": display}, quote_via=quote
        )
        return ParticipantToken(
            token=token,
            join_url=f"{self.config.join_page}#{fragment}",
            role=role,
            expires_at=expires,
        )

    # -- recordings -----------------------------------------------------------------------

    async def delete_recording(self, recording: Recording, keep: Collection[str] = ()) -> bool:
        key = self._api_jwt_key
        if key is None:
            return False  # without API credentials nothing can be deleted
        session_id, _, file_id = recording.recording_id.partition(":")
        what = "Zoom delete recording"
        path = f"/videosdk/sessions/{_session_path(session_id)}/recordings"
        if any(kept.partition(":")[0] == session_id for kept in keep):
            # Files of this session are linked to the record: this file alone.
            path += f"/{quote(file_id, safe='')}"
        response, secrets = await self._api(key, "DELETE", path, what, params=_FOR_GOOD)
        if response.is_success or response.status_code == 404:
            return True  # deleted now, or already gone
        common.raise_for_status(response, what, secrets, self._clock())

    # -- webhooks -------------------------------------------------------------------------

    def _verified(self, headers: Mapping[str, str], body: bytes) -> tuple[str, dict[str, Any]]:
        secret = self.config.webhook_secret
        if not secret:
            raise WebhookRejected("Zoom webhooks are not configured (no webhook_secret)")
        raw = common.header(headers, "x-zm-request-timestamp")
        got = (common.header(headers, "x-zm-signature") or "").strip()
        message = b"v0:" + (raw or "").strip().encode() + b":" + body
        expected = "v0=" + common.hmac_sha256(secret.encode(), message).hex()
        if not hmac.compare_digest(got.encode(), expected.encode()):
            raise WebhookRejected("webhook signature is missing or wrong")
        common.signed_at(raw, self._clock(), common.REPLAY_WINDOW)
        return secret, common.json_object(body)

    def webhook_challenge(self, headers: Mapping[str, str], body: bytes) -> dict[str, str] | None:
        secret, event = self._verified(headers, body)
        if event.get("event") != _VALIDATION:
            return None
        payload = event.get("payload")
        plain = common.text_field(payload, "plainToken") if isinstance(payload, dict) else None
        if plain is None or len(plain) > 256:
            raise WebhookRejected("webhook validation has no plainToken")
        encrypted = common.hmac_sha256(secret.encode(), plain.encode()).hex()
        return {"plainToken": plain, "encryptedToken": encrypted}

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        _, event = self._verified(headers, body)
        kind = _EVENTS.get(str(event.get("event")))
        if kind is None:
            return []  # endpoint.url_validation and events we do not track
        payload = event.get("payload")
        data = payload.get("object") if isinstance(payload, dict) else None
        if not isinstance(data, dict):
            raise WebhookRejected("webhook event has no payload.object")
        session = common.text_field(data, "session_name")
        if session is None:
            raise WebhookRejected("webhook event has no session_name")
        room_id = session.lower()  # Zoom session names are case-insensitive
        event_id = hashlib.sha256(body).hexdigest()[:32]
        sent = event.get("event_ts")
        sent_at = (
            common.parse_time(sent / 1000)
            if isinstance(sent, int | float) and not isinstance(sent, bool)
            else None
        )
        if kind == "room-ended":
            at = common.parse_time(data.get("end_time")) or sent_at or self._clock()
            return [RoomEvent(self.name, kind, room_id, at, event_id=event_id)]
        if kind == "recording-ready":
            return self._recordings(data, room_id, event_id, sent_at or self._clock())
        user = data.get("user")
        if not isinstance(user, dict):
            raise WebhookRejected("webhook event has no user")
        stamp = user.get("join_time" if kind == "participant-joined" else "leave_time")
        return [
            RoomEvent(
                provider=self.name,
                kind=kind,
                room_id=room_id,
                at=common.parse_time(stamp) or sent_at or self._clock(),
                participant_identity=identity_from_user_key(common.text_field(user, "user_key")),
                participant_display=common.text_field(user, "name"),
                participant_sid=common.text_field(user, "participant_uuid")
                or common.text_field(user, "id"),
                event_id=event_id,
            )
        ]

    def _recordings(
        self, data: Mapping[str, Any], room_id: str, event_id: str, sent_at: datetime
    ) -> list[RoomEvent]:
        session_id = common.text_field(data, "session_id")
        files = data.get("recording_files")
        if session_id is None or not isinstance(files, list):
            raise WebhookRejected("recording event has no session_id or recording_files")
        if ":" in session_id:
            return []  # not a Zoom session id: the recording id could not be taken apart
        events = []
        for item in files:
            if not isinstance(item, dict):
                continue
            content_type, title = _FILE_TYPES.get(str(item.get("file_type")).upper(), _OTHER_FILE)
            file_id = common.text_field(item, "id")
            location = common.text_field(item, "download_url")
            url = _credential_free(location) if location else None
            if file_id is None or url is None:
                continue
            started = common.parse_time(item.get("recording_start"))
            ended = common.parse_time(item.get("recording_end"))
            size = common.number(item.get("file_size"))
            recording = Recording(
                recording_id=f"{session_id}:{file_id}",
                url=url,
                content_type=content_type,
                title=f"{title} of the virtual visit",
                started=started,
                duration=common.recording_duration((ended - started).total_seconds())
                if started and ended
                else None,
                size=int(size) if size is not None else None,
            )
            events.append(
                RoomEvent(
                    provider=self.name,
                    kind="recording-ready",
                    room_id=room_id,
                    at=started or sent_at,
                    event_id=f"{event_id}:{file_id}",
                    recording=recording,
                )
            )
        return events
