"""Daily provider contract tests against a fake Daily REST API on `httpx.MockTransport`.

The fake follows docs.daily.co: "Create room" (`POST /v1/rooms` {name, privacy,
properties {exp, eject_at_room_exp, max_participants}} -> the room object {id, name,
api_created, privacy, url, created_at, config}; a taken name: 400 {"error":
"invalid-request-error", "info": "a room named ... already exists"}), "Get room config"
(`GET /v1/rooms/:name`, 404 {"error": "not-found"}), "Delete room" (`DELETE
/v1/rooms/:name` -> {"deleted": true, "name"}; 404 when gone), the API key as Bearer (401
{"error": "authentication-error"}), 429 {"error": "rate-limit-error"}, "Self-signing
tokens" (HS256 with the API key; r, d, o, u, ud, nbf, exp, iat) and "Webhooks" (the hmac
secret base64; X-Webhook-Timestamp, X-Webhook-Signature = base64 HMAC-SHA256(decoded
secret, "{timestamp}.{body}"); the unsigned {"test": "test"} endpoint check; events
participant.joined / participant.left / meeting.ended with id, payload, event_ts),
"Recording ready to download" (recording.ready-to-download: payload {type, recording_id,
room_name, start_ts, status, max_participants, duration, s3_key}) and "Delete recording"
(`DELETE /v1/recordings/:id` -> {"deleted": true, "id"}; 404 when gone).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from fhirserver.telehealth.providers import (
    DailyConfig,
    DailyProvider,
    ProviderError,
    ProviderUnavailable,
    Room,
    VideoProvider,
    WebhookChallenges,
    WebhookRejected,
)
from tests.telehealth.providers.helpers import NOW, assert_no_secrets, claims, client, clock

API_KEY = "daily-api-key-0123456789abcdef0123456789abcdef"
DOMAIN = "clinic"
DOMAIN_ID = "30f866c3-9123-452a-8723-ff58322d09c5"
HOOK_HMAC = base64.b64encode(b"daily-webhook-hmac-key-0123456789").decode()
BASE = "https://api.daily.co/v1"


def error(status: int, kind: str, info: str) -> httpx.Response:
    return httpx.Response(status, json={"error": kind, "info": info})


class FakeDaily:
    """The parts of the Daily REST API the provider uses, with Daily's answers."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Any]] = {}
        self.recordings: set[str] = set()
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: list[httpx.Response | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        assert request.url.host == "api.daily.co"
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return error(401, "authentication-error", "Invalid API key")
        path = request.url.path.removeprefix("/v1")
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, path, body))
        if request.method == "POST" and path == "/rooms":
            name = body["name"]
            if name in self.rooms:
                return error(400, "invalid-request-error", f"a room named {name} already exists")
            room = {
                "id": f"5e3cf703-5547-47d6-a371-37b1f0b4427{len(self.rooms)}",
                "name": name,
                "api_created": True,
                "privacy": body.get("privacy", "public"),
                "url": f"https://{DOMAIN}.daily.co/{name}",
                "created_at": "2030-05-17T09:30:00.000Z",
                "config": body.get("properties", {}),
            }
            self.rooms[name] = room
            return httpx.Response(200, json=room)
        if request.method == "DELETE" and path.startswith("/recordings/"):
            recording = unquote(path.removeprefix("/recordings/"))
            if recording not in self.recordings:
                return error(404, "not-found", f"recording {recording} not found")
            self.recordings.discard(recording)
            return httpx.Response(200, json={"deleted": True, "id": recording})
        name = unquote(path.removeprefix("/rooms/"))
        if request.method == "GET" and path.startswith("/rooms/"):
            if name not in self.rooms:
                return error(404, "not-found", f"room {name} not found")
            return httpx.Response(200, json=self.rooms[name])
        if request.method == "DELETE" and path.startswith("/rooms/"):
            if self.rooms.pop(name, None) is None:
                return error(404, "not-found", f"room {name} not found")
            return httpx.Response(200, json={"deleted": True, "name": name})
        return error(404, "not-found", "not found")


def make(fake: FakeDaily, **config: Any) -> DailyProvider:
    settings: dict[str, Any] = {
        "api_key": API_KEY,
        "domain": DOMAIN,
        "domain_id": DOMAIN_ID,
        "webhook_hmac": HOOK_HMAC,
    } | config
    return DailyProvider(DailyConfig(**settings), http=client(fake), clock=clock)


@pytest.fixture
def fake() -> FakeDaily:
    return FakeDaily()


@pytest.fixture
def provider(fake: FakeDaily) -> DailyProvider:
    return make(fake)


def test_is_a_video_provider(provider: DailyProvider) -> None:
    assert isinstance(provider, VideoProvider) and not isinstance(provider, WebhookChallenges)
    assert provider.name == "daily"


# -- rooms -------------------------------------------------------------------------------


async def test_create_room_is_private_expires_and_is_idempotent(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    room = await provider.create_room("appt-1", max_participants=3)
    again = await make(fake).create_room("appt-1", max_participants=3)
    assert room == again and list(fake.rooms) == [room.name]
    assert room.provider == "daily" and room.room_id == room.name
    assert room.name.startswith("visit-") and "appt-1" not in room.name
    assert room.join_url == f"https://clinic.daily.co/{room.name}"
    method, path, body = fake.calls[0]
    assert (method, path) == ("POST", "/rooms")
    assert body == {
        "name": room.name,
        "privacy": "private",
        "properties": {
            "exp": int((NOW + timedelta(days=30)).timestamp()),
            "eject_at_room_exp": True,
            "max_participants": 3,
        },
    }
    # The retry met Daily's "already exists" and found the room.
    assert [c[:2] for c in fake.calls[1:]] == [("POST", "/rooms"), ("GET", f"/rooms/{room.name}")]
    assert await provider.room(room.room_id) == room
    assert Room.from_dict(json.loads(json.dumps(room.to_dict()))) == room


async def test_a_conflict_for_a_taken_name_finds_the_room(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.fail.append(error(409, "invalid-request-error", f"{room.name} already exists"))
    assert await provider.create_room("appt-1") == room
    assert fake.calls[-1][:2] == ("GET", f"/rooms/{room.name}") and len(fake.rooms) == 1


async def test_room_ttl_is_configurable(fake: FakeDaily) -> None:
    await make(fake, room_ttl=timedelta(days=90)).create_room("appt-1")
    assert fake.calls[0][2]["properties"] == {
        "exp": int((NOW + timedelta(days=90)).timestamp()),
        "eject_at_room_exp": True,
    }


async def test_a_bad_request_stays_a_provider_error(fake: FakeDaily) -> None:
    fake.fail.append(error(400, "invalid-request-error", "properties.exp must be a number"))
    with pytest.raises(ProviderError) as caught:
        await make(fake).create_room("appt-1")
    assert caught.value.provider_status == 400 and "exp must be" in str(caught.value)
    assert fake.rooms == {}


async def test_close_deletes_the_room_and_is_idempotent(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    room = await provider.create_room("appt-1")
    await provider.close_room(room)
    assert fake.rooms == {}
    await provider.close_room(room)  # 404: already gone
    assert fake.calls[-2:] == [
        ("DELETE", f"/rooms/{room.name}", None),
        ("DELETE", f"/rooms/{room.name}", None),
    ]
    never = Room("daily", "visit-never", "visit-never", "")
    await provider.close_room(never)


async def test_bad_credentials_are_a_provider_error(fake: FakeDaily) -> None:
    wrong = make(fake, api_key="another-daily-api-key-0123456789abcdef")
    with pytest.raises(ProviderError) as caught:
        await wrong.create_room("appt-1")
    assert caught.value.provider_status == 401 and "credentials" in str(caught.value)
    assert not isinstance(caught.value, ProviderUnavailable)
    with pytest.raises(ProviderError):
        await wrong.close_room(Room("daily", "visit-x", "visit-x", ""))


@pytest.mark.parametrize(
    "failure",
    [
        error(429, "rate-limit-error", "Too many requests"),
        error(500, "server-error", "internal error"),
        error(503, "server-error", "unavailable"),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("timed out"),
    ],
)
async def test_outages_are_retryable_and_a_retry_succeeds(
    fake: FakeDaily, provider: DailyProvider, failure: httpx.Response | Exception
) -> None:
    fake.fail.append(failure)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_room("appt-1")
    assert caught.value.status == 503 and caught.value.code == "transient"
    room = await provider.create_room("appt-1")
    assert list(fake.rooms) == [room.name]


async def test_outage_on_close_is_retryable(fake: FakeDaily, provider: DailyProvider) -> None:
    room = await provider.create_room("appt-1")
    limited = error(429, "rate-limit-error", "Too many requests")
    limited.headers["Retry-After"] = "3"
    fake.fail.append(limited)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.close_room(room)
    assert caught.value.retry_after == 3
    await provider.close_room(room)
    assert fake.rooms == {}


async def test_a_non_json_success_is_a_provider_error(fake: FakeDaily) -> None:
    fake.fail.append(httpx.Response(200, text="<html>daily</html>"))
    with pytest.raises(ProviderError, match="not a JSON object"):
        await make(fake).create_room("appt-1")


# -- participant tokens -----------------------------------------------------------------


@pytest.mark.parametrize(("role", "owner"), [("host", True), ("guest", False)])
async def test_meeting_token_claims(provider: DailyProvider, role: str, owner: bool) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/p1", "Pat Doe", role, timedelta(minutes=10))  # type: ignore[arg-type]
    assert issued.token is not None
    got = claims(issued.token, API_KEY)
    assert got == {
        "r": room.name,
        "d": DOMAIN_ID,
        "o": owner,
        "u": "Pat Doe",
        "ud": "Patient/p1",
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "exp": int((NOW + timedelta(minutes=10)).timestamp()),
    }
    assert "ejt" not in got  # the token admits for ttl; it does not end the stay
    assert issued.role == role and issued.expires_at == NOW + timedelta(minutes=10)
    url = urlsplit(issued.join_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == room.join_url
    assert parse_qs(url.query) == {"t": [issued.token]}


async def test_only_a_host_token_asked_to_record_may_record(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    """enable_recording (`er`) and start_cloud_recording (`sr`) only when asked for, and
    never for a guest: the room itself is created without enable_recording."""
    room = await provider.create_room("appt-1")
    ttl = timedelta(minutes=10)
    recording = provider.participant_token(room, "Practitioner/d1", "Dr", "host", ttl, record=True)
    assert recording.token is not None
    got = claims(recording.token, API_KEY)
    assert (got["er"], got["sr"], got["o"]) == ("cloud", True, True)
    plain = provider.participant_token(room, "Practitioner/d1", "Dr", "host", ttl)
    assert plain.token is not None
    assert not {"er", "sr"} & set(claims(plain.token, API_KEY))
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/p1", "Pat", "guest", ttl, record=True)
    assert "enable_recording" not in fake.rooms[room.name]["config"]


async def test_tokens_are_checked(provider: DailyProvider) -> None:
    room = await provider.create_room("appt-1")
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(0))
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "owner", timedelta(minutes=5))  # type: ignore[arg-type]
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None
    with pytest.raises(Exception):  # noqa: B017 - any failure to verify will do
        claims(issued.token, "another-daily-api-key-0123456789abcdef")


# -- webhooks -----------------------------------------------------------------------------


def hook(
    kind: str, event_id: str = "ptcpt-join-6497c79b-f326-4942-aef8-c36a29140ad1", **data: Any
) -> bytes:
    body = {
        "version": "1.0.0",
        "type": kind,
        "id": event_id,
        "payload": {"room": "visit-0123"} | data,
        "event_ts": NOW.timestamp(),
    }
    return json.dumps(body).encode()


def signed(body: bytes, secret: str = HOOK_HMAC, at: float | None = None) -> dict[str, str]:
    stamp = str(int(NOW.timestamp() if at is None else at))
    digest = hmac.new(base64.b64decode(secret), f"{stamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": base64.b64encode(digest.digest()).decode(),
        "Content-Type": "application/json",
    }


PARTICIPANT = {
    "user_id": "Practitioner/d1",
    "user_name": "Dr Who",
    "session_id": "0c0d2dda-f21d-4cf9-ab56-86bf3c407ffa",
    "owner": True,
    "joined_at": int(NOW.timestamp()) - 60,
}


def test_webhook_participant_joined(provider: DailyProvider) -> None:
    body = hook("participant.joined", **PARTICIPANT)
    [got] = provider.parse_webhook(signed(body), body)
    assert got.kind == "participant-joined" and got.room_id == "visit-0123"
    assert got.participant_identity == "Practitioner/d1" and got.participant_display == "Dr Who"
    assert got.participant_sid == PARTICIPANT["session_id"]
    assert got.event_id == "ptcpt-join-6497c79b-f326-4942-aef8-c36a29140ad1"
    assert got.at == NOW - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("reported", "quality"),
    [("good", "good"), ("warning", "warning"), ("bad", "bad"), ("unknown", None), (3, None)],
)
def test_webhook_participant_network_quality(
    provider: DailyProvider, reported: object, quality: str | None
) -> None:
    body = hook("participant.joined", **PARTICIPANT, networkQualityState=reported)
    [got] = provider.parse_webhook(signed(body), body)
    assert got.network_quality == quality
    body = hook("participant.joined", **PARTICIPANT)
    assert provider.parse_webhook(signed(body), body)[0].network_quality is None


def test_webhook_participant_left_and_meeting_ended(provider: DailyProvider) -> None:
    headers_body = hook("participant.left", "ptcpt-left-1", **PARTICIPANT, duration=45)
    [left] = provider.parse_webhook(signed(headers_body), headers_body)
    assert left.kind == "participant-left" and left.at == NOW - timedelta(seconds=15)
    no_duration = hook("participant.left", "ptcpt-left-2", **PARTICIPANT)
    [left] = provider.parse_webhook(signed(no_duration), no_duration)
    assert left.at == NOW  # the event's own time
    end = int(NOW.timestamp()) + 600
    body = hook("meeting.ended", "meeting-ended-1", start_ts=end - 1800, end_ts=end)
    [ended] = provider.parse_webhook(signed(body), body)
    assert ended.kind == "room-ended" and ended.room_id == "visit-0123"
    assert ended.at == NOW + timedelta(minutes=10) and ended.event_id == "meeting-ended-1"


def test_webhook_events_we_do_not_track_are_verified_then_ignored(
    provider: DailyProvider,
) -> None:
    body = hook("recording.started", "rec-1")
    assert provider.parse_webhook(signed(body), body) == []
    body = hook("recording.error", "rec-2")
    assert provider.parse_webhook(signed(body), body) == []
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(body, secret=base64.b64encode(b"guess").decode()), body)


RECORDING = {
    "type": "cloud",
    "recording_id": "cadf8094-62d8-4405-a56e-7640a1ec22cb",
    "room_name": "visit-0123",
    "start_ts": int(NOW.timestamp()) - 1800,
    "status": "finished",
    "max_participants": 2,
    "duration": 1200,
    "s3_key": "clinic/visit-0123/1658411764284",
}


def test_webhook_recording_ready_to_download(provider: DailyProvider) -> None:
    body = hook("recording.ready-to-download", "rec-ready-1", **RECORDING)
    [got] = provider.parse_webhook(signed(body), body)
    assert (got.kind, got.room_id, got.event_id) == ("recording-ready", "visit-0123", "rec-ready-1")
    assert got.recording is not None and got.at == NOW - timedelta(minutes=30)
    assert got.recording.recording_id == RECORDING["recording_id"]
    assert got.recording.url == f"{BASE}/recordings/{RECORDING['recording_id']}"
    assert (got.recording.content_type, got.recording.duration) == ("video/mp4", 1200)
    assert got.recording.started == NOW - timedelta(minutes=30)
    raw_tracks = hook(
        "recording.ready-to-download", "rec-ready-2", **RECORDING | {"type": "raw-tracks"}
    )
    [tracks] = provider.parse_webhook(signed(raw_tracks), raw_tracks)
    assert tracks.recording is not None and tracks.recording.content_type == "video/webm"
    no_id = hook("recording.ready-to-download", "rec-ready-3", room_name="visit-0123")
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(no_id), no_id)


async def test_delete_recording_is_idempotent_and_outages_are_retryable(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    body = hook("recording.ready-to-download", "rec-ready-1", **RECORDING)
    [event] = provider.parse_webhook(signed(body), body)
    assert event.recording is not None
    fake.recordings.add(event.recording.recording_id)
    assert await provider.delete_recording(event.recording) is True
    assert fake.recordings == set()
    assert fake.calls[-1] == ("DELETE", f"/recordings/{RECORDING['recording_id']}", None)
    assert await provider.delete_recording(event.recording) is True  # gone already: done
    fake.fail.append(error(503, "server-error", "try again"))
    with pytest.raises(ProviderUnavailable):
        await provider.delete_recording(event.recording)


def test_the_endpoint_check_is_accepted_unsigned_and_records_nothing(
    provider: DailyProvider, fake: FakeDaily
) -> None:
    assert provider.parse_webhook({}, b'{"test":"test"}') == []
    assert make(fake, webhook_hmac=None).parse_webhook({}, b'{"test": "test"}') == []
    with pytest.raises(WebhookRejected):  # anything else unsigned is not
        provider.parse_webhook({}, b'{"test":"test","type":"participant.joined"}')


def forged(body: bytes) -> dict[str, str]:
    return signed(body, secret=base64.b64encode(b"guessed-hmac-secret-0123456789").decode())


def altered(body: bytes) -> dict[str, str]:
    return signed(body.replace(b"Dr Who", b"Dr Evil"))


def stale(body: bytes) -> dict[str, str]:
    return signed(body, at=NOW.timestamp() - 301)


def future(body: bytes) -> dict[str, str]:
    return signed(body, at=NOW.timestamp() + 301)


def retimed(body: bytes) -> dict[str, str]:
    return signed(body, at=NOW.timestamp() - 3600) | {
        "X-Webhook-Timestamp": str(int(NOW.timestamp()))
    }


def raw_secret(body: bytes) -> dict[str, str]:
    # Keyed with the base64 text itself rather than the bytes it encodes.
    stamp = str(int(NOW.timestamp()))
    digest = hmac.new(HOOK_HMAC.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    return {
        "X-Webhook-Timestamp": stamp,
        "X-Webhook-Signature": base64.b64encode(digest.digest()).decode(),
    }


def hex_digest(body: bytes) -> dict[str, str]:
    headers = signed(body)
    raw = base64.b64decode(headers["X-Webhook-Signature"])
    return headers | {"X-Webhook-Signature": raw.hex()}


def unsigned(body: bytes) -> dict[str, str]:
    return {"X-Webhook-Timestamp": str(int(NOW.timestamp()))}


@pytest.mark.parametrize(
    "headers_for", [forged, altered, stale, future, retimed, raw_secret, hex_digest, unsigned]
)
def test_webhook_that_cannot_be_verified_is_rejected(
    provider: DailyProvider, headers_for: Any
) -> None:
    body = hook("participant.joined", **PARTICIPANT)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers_for(body), body)


def test_header_names_are_case_insensitive(provider: DailyProvider) -> None:
    body = hook("participant.joined", **PARTICIPANT)
    headers = {k.lower(): v for k, v in signed(body).items()}
    assert len(provider.parse_webhook(headers, body)) == 1


def test_webhook_without_a_configured_secret_rejects_everything(fake: FakeDaily) -> None:
    provider = make(fake, webhook_hmac=None)
    body = hook("participant.joined", **PARTICIPANT)
    with pytest.raises(WebhookRejected, match="not configured"):
        provider.parse_webhook(signed(body), body)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'"participant.joined"',
        json.dumps({"type": "participant.joined"}).encode(),
        json.dumps({"type": "participant.joined", "payload": {"user_id": "x"}}).encode(),
    ],
)
def test_signed_body_that_is_not_an_event_is_rejected(provider: DailyProvider, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(body), body)


# -- secrets ------------------------------------------------------------------------------


async def test_no_secret_in_reprs_or_error_messages(
    fake: FakeDaily, provider: DailyProvider
) -> None:
    texts = [repr(provider.config), str(provider.config)]
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    texts += [repr(room), repr(issued)]

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["Authorization"]
        return error(400, "invalid-request-error", f"bad {sent} {API_KEY} {HOOK_HMAC}")

    echoing = DailyProvider(provider.config, http=client(echo), clock=clock)
    for call in (echoing.create_room("appt-2"), echoing.close_room(room)):
        with pytest.raises(ProviderError) as caught:
            await call
        texts += [str(caught.value), repr(caught.value)]
        assert "***" in str(caught.value)
    body = hook("participant.joined", **PARTICIPANT)
    for headers in (forged(body), stale(body)):
        with pytest.raises(WebhookRejected) as rejected:
            provider.parse_webhook(headers, body)
        texts.append(str(rejected.value))
    assert issued.token is not None
    assert_no_secrets(texts, [API_KEY, HOOK_HMAC, issued.token])


def test_config_is_checked() -> None:
    base: dict[str, Any] = {"api_key": API_KEY, "domain": DOMAIN, "domain_id": DOMAIN_ID}
    DailyConfig(**base)
    for wrong in (
        {"api_key": ""},
        {"domain": "clinic.daily.co/x"},
        {"domain_id": ""},
        {"webhook_hmac": "not base64!"},
        {"room_ttl": timedelta(0)},
        {"room_prefix": "Visit "},
    ):
        with pytest.raises(ValueError) as caught:
            DailyConfig(**(base | wrong))
        assert API_KEY not in str(caught.value)


async def test_aclose_leaves_an_injected_client_open(fake: FakeDaily) -> None:
    http = client(fake)
    provider = DailyProvider(
        DailyConfig(api_key=API_KEY, domain=DOMAIN, domain_id=DOMAIN_ID), http=http
    )
    await provider.aclose()
    assert not http.is_closed
    await http.aclose()
