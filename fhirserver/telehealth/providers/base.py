"""The `VideoProvider` protocol, its data types and its errors.

One protocol for every video vendor (Jitsi, LiveKit, 100ms, Zoom Video SDK, Daily). The
lifecycle code calls it only after the state change that asked for a room has committed
(DESIGN.md "Side effects and external calls"), so every call is built to be retried:

- `create_room(key)` is idempotent on `key`: the room name is derived from the key
  (deterministically), and the provider's own "create returns the existing room"
  behaviour does the rest. Creating twice yields the same room, never two.
- `room(room_id)` rebuilds a `Room` from the id the server stored; it makes no network
  call where the provider needs none (Jitsi, LiveKit).
- `close_room(room)` is idempotent: closing a room that is already closed, or that never
  materialised at the provider, is success.
- `participant_token(...)` is synchronous in every provider: all of them sign their
  tokens locally (HS256 JWTs) and need no network call. `record=True` (asked only for a
  host, and only when the patient's recording Consent is in force) lets that token start
  the provider's cloud recording where the provider grants recording per token (Daily);
  without it no token of ours grants recording.
- A finished recording arrives as a `recording-ready` event carrying a `Recording`. A
  provider that can delete recordings implements `RecordingDeletion`: the server deletes
  a recording no Consent allows (webhooks.py).
- `parse_webhook(headers, body)` verifies authenticity before it looks at the body and
  raises `WebhookRejected` for anything it cannot verify; it never returns events from
  an unverified request.
- A provider that checks a webhook endpoint with a challenge before it delivers to it
  (Zoom's `endpoint.url_validation`) also implements `WebhookChallenges`; the webhook
  route answers a challenge instead of recording events.

Errors: `ProviderUnavailable` (an outage: connection error, timeout, 408, 429, 5xx —
retry with backoff) and `ProviderError` (a refusal retrying cannot fix: bad credentials,
bad request). Both are `FHIRError`s (502 / 503), so an operation that lets them through
answers with an OperationOutcome. No message ever contains a secret, a token or an API
key; config objects keep their credentials out of `repr()`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from fhirserver.errors import FHIRError

ParticipantRole = Literal["host", "guest"]
EventKind = Literal["participant-joined", "participant-left", "room-ended", "recording-ready"]
ROLES: tuple[ParticipantRole, ...] = ("host", "guest")
#: A participant's network quality as a provider reports it (Daily's
#: `networkQualityState`; "unknown" is reported as None).
NetworkQuality = Literal["good", "warning", "bad"]
NETWORK_QUALITIES: tuple[NetworkQuality, ...] = ("good", "warning", "bad")


class VideoProviderError(FHIRError):
    """Base of the provider errors. The message is safe to show and to log."""

    status, code = 502, "exception"


class ProviderError(VideoProviderError):
    """The provider refused the request and retrying will not help (4xx other than 408/429:
    bad credentials, bad request, unknown template...)."""

    status, code = 502, "exception"

    def __init__(self, diagnostics: str, *, provider_status: int | None = None) -> None:
        super().__init__(diagnostics)
        self.provider_status = provider_status


class ProviderUnavailable(VideoProviderError):
    """The provider could not be reached or is overloaded (connection error, timeout, 408,
    429, 5xx). Retryable; `retry_after` is the provider's hint in seconds, if it gave one."""

    status, code = 503, "transient"

    def __init__(
        self,
        diagnostics: str,
        *,
        provider_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        super().__init__(diagnostics, headers=headers)
        self.provider_status = provider_status
        self.retry_after = retry_after


class WebhookRejected(VideoProviderError):
    """A webhook request that could not be verified (missing or wrong signature / secret,
    expired token, body altered after signing) or whose body is not a valid event, or a
    provider that has no webhooks. Nothing from such a request may be recorded."""

    status, code = 401, "security"


@dataclass(frozen=True)
class Room:
    """A room at a provider, as `create_room` returned it.

    `room_id` is what the provider's APIs and webhooks call the room (LiveKit and Jitsi: the
    room name; 100ms: the room id it assigned). `join_url` is the guest entry point without
    any credential of ours; for the Jitsi no-account mode and 100ms Prebuilt links it is
    itself enough to join (see those modules). `extra` holds what the provider needs later
    (100ms room codes, the LiveKit room sid); room codes are bearer credentials, so keep
    `extra` server-side: do not copy it into resources or logs. Persist a room with
    `to_dict()` and restore it with `from_dict()`.
    """

    provider: str
    room_id: str
    name: str
    join_url: str
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "room_id": self.room_id,
            "name": self.name,
            "join_url": self.join_url,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Room:
        extra = data.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise ValueError("Room.extra must be a mapping")
        values = {k: data.get(k) for k in ("provider", "room_id", "name", "join_url")}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValueError("Room needs provider, room_id, name and join_url strings")
        return cls(
            provider=str(values["provider"]),
            room_id=str(values["room_id"]),
            name=str(values["name"]),
            join_url=str(values["join_url"]),
            extra={str(k): str(v) for k, v in extra.items()},
        )


@dataclass(frozen=True)
class ParticipantToken:
    """What a participant needs to join: the signed token (None where the provider has no
    tokens: the Jitsi no-account mode), a browser URL that carries it, the role the token
    grants, and when it stops admitting (None: the URL never expires by itself)."""

    token: str | None = field(repr=False)
    join_url: str = field(repr=False)
    role: ParticipantRole
    expires_at: datetime | None


@dataclass(frozen=True)
class Recording:
    """A finished recording at the provider, as its webhook reported it.

    `recording_id` is what the provider's API calls it (what `delete_recording` needs);
    `url` is where the provider serves it, without any credential (the provider's own
    API authorisation is needed to fetch it: a download token a webhook carries is never
    kept); `title` what the file is (a recording, its transcript, its chat); `size` in
    bytes and `duration` in seconds when reported."""

    recording_id: str
    url: str
    content_type: str
    title: str = "Recording of the virtual visit"
    started: datetime | None = None
    duration: float | None = None
    size: int | None = None


@dataclass(frozen=True)
class RoomEvent:
    """One verified event from a provider webhook.

    `participant_identity` is the identity we put into the participant's token (LiveKit
    identity, 100ms user_id, Jitsi context.user.id) when the provider reports it;
    `participant_sid` is the provider's id for that one connection (pairs a join with its
    leave); `event_id` is the provider's id for the delivery, for de-duplication (webhooks
    are delivered at least once, and a captured one can be replayed). `recording` comes
    with a `recording-ready` event; `network_quality` with a participant event, where
    the provider reports the participant's connection (call_quality.py).
    """

    provider: str
    kind: EventKind
    room_id: str
    at: datetime
    participant_identity: str | None = None
    participant_display: str | None = None
    participant_sid: str | None = None
    event_id: str | None = None
    recording: Recording | None = None
    network_quality: NetworkQuality | None = None


@runtime_checkable
class VideoProvider(Protocol):
    """A video vendor. Implementations: `JitsiProvider`, `LiveKitProvider`, `HmsProvider`,
    `ZoomProvider`, `DailyProvider`."""

    #: "jitsi" | "livekit" | "100ms" | "zoom-video-sdk" | "daily" — also `Room.provider`
    #: of the rooms it creates.
    name: str

    async def create_room(self, key: str, max_participants: int | None = None) -> Room:
        """Provision (or find) the room for `key`, e.g. an Appointment id. Idempotent."""
        ...

    async def room(self, room_id: str) -> Room:
        """The Room behind a `room_id` that `create_room` returned, possibly in another
        process or before a restart (the id is all the server keeps). Creates nothing."""
        ...

    async def close_room(self, room: Room) -> None:
        """End the room and stop it admitting anyone. Idempotent."""
        ...

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
        """Sign a token for one participant (no network call). `identity` is a stable,
        non-PII id such as "Patient/123"; `display` is the name shown in the room;
        `record`: the token may start the cloud recording (hosts only; see above)."""
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> list[RoomEvent]:
        """Verify a webhook request, then translate it into events (possibly none: events
        we do not track are verified and ignored). Raises `WebhookRejected`."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client if the provider created it (an injected one is left open)."""
        ...


@runtime_checkable
class RecordingDeletion(Protocol):
    """A provider whose API deletes a finished recording (Daily; Zoom with API
    credentials)."""

    async def delete_recording(self, recording: Recording, keep: Collection[str] = ()) -> bool:
        """Delete it at the provider for good; True once it is gone (already gone
        included), False when this provider is not configured to delete (no API
        credentials). `keep`: the ids of recordings linked to the record, which must
        survive a deletion that would take more than this one (Zoom's whole session)."""
        ...


@runtime_checkable
class WebhookChallenges(Protocol):
    """A provider whose webhook endpoint must answer a challenge (Zoom)."""

    def webhook_challenge(self, headers: Mapping[str, str], body: bytes) -> dict[str, str] | None:
        """Verify the request like `parse_webhook` (WebhookRejected), then: the JSON answer
        to send back if it is a challenge, None if it is an ordinary delivery."""
        ...
