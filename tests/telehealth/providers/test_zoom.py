"""Zoom Video SDK provider contract tests against a fake Video SDK REST API on
`httpx.MockTransport`.

The fake follows developers.zoom.us: "Authorize" (/docs/video-sdk/auth/: HS256 with the SDK
secret; app_key, tpc, role_type 1/0, version 1, iat, exp between 30 minutes and 48 hours
after iat, session_key at most 36 characters, user_identity at most 35), "Make API
requests" (/docs/build/api-request/: API JWT with iss = API key and exp, HS256 with the API
secret, as Bearer), the Video SDK API ("List sessions" `GET /v2/videosdk/sessions?type=live
&from&to` -> {sessions: [{id, session_name, ...}], next_page_token}; "Update session status"
`PUT /v2/videosdk/sessions/{sessionId}/status` {"action": "end"} -> 204, an unknown or
ended session 404 {"code": 3001, "message": ...}; 401 {"code": 124, "message": "Invalid
access token."}; 429 {"code": 429, ...}) and the webhook pages (x-zm-request-timestamp,
x-zm-signature "v0=" + hex HMAC-SHA256(secret token, "v0:{ts}:{body}"), the
endpoint.url_validation challenge, session.user_joined / session.user_left /
session.ended with payload.object and event_ts in milliseconds), the recording webhook
(changelog 2021-12-18: session.recording_completed with payload.object {session_id,
session_name, start_time, recording_files [{id, recording_start, recording_end,
file_type, file_size, download_url, status, recording_type}]} and a download_token) and
"Delete a recording" (`DELETE /v2/videosdk/sessions/{sessionId}/recordings/{recordingId}`
-> 204; 404 {"code": 3301} when gone).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest

from fhirserver.telehealth.providers import (
    ProviderError,
    ProviderUnavailable,
    Room,
    VideoProvider,
    WebhookChallenges,
    WebhookRejected,
    ZoomConfig,
    ZoomProvider,
)
from fhirserver.telehealth.providers.zoom import identity_from_user_key, user_identity
from tests.telehealth.providers.helpers import (
    NOW,
    assert_no_secrets,
    bearer_claims,
    claims,
    client,
    clock,
    sign,
)

SDK_KEY = "zoomSdkKey0123456789"
SDK_SECRET = "zoom-sdk-secret-0123456789abcdefgh"
API_KEY = "zoomApiKey9876543210"
API_SECRET = "zoom-api-secret-fedcba9876543210xy"
HOOK_SECRET = "zoom-hook-secret-token-0a1b2c3d"
JOIN_PAGE = "https://clinic.example.org/video"
DOCTOR = "Practitioner/0f8fad5b-d9cb-469f-a165-70867728950e"


def error(status: int, code: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message})


class FakeZoom:
    """The Video SDK REST API calls the provider makes, with Zoom's answers."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}  # id -> session
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: list[httpx.Response | Exception] = []
        self.page_size = 300
        self.recordings: set[tuple[str, str]] = set()  # (session id, file id)

    def start(self, name: str, session_id: str) -> None:
        """Someone joined `name` with an SDK token: Zoom created the session."""
        self.sessions[session_id] = {"id": session_id, "session_name": name, "live": True}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        assert request.url.host == "api.zoom.us"
        try:
            token = bearer_claims(request, API_SECRET)
        except Exception:
            return error(401, 124, "Invalid access token.")
        if token.get("iss") != API_KEY or token["exp"] <= NOW.timestamp():
            return error(401, 124, "Invalid access token.")
        path = request.url.raw_path.decode().split("?")[0].removeprefix("/v2")
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, path, body))
        if request.method == "GET" and path == "/videosdk/sessions":
            params = request.url.params
            assert params["type"] == "live" and params["from"] <= params["to"]
            live = [s for s in self.sessions.values() if s["live"]]
            start = int(params.get("next_page_token") or 0)
            page = live[start : start + self.page_size]
            more = start + self.page_size < len(live)
            items = [{"id": s["id"], "session_name": s["session_name"]} for s in page]
            return httpx.Response(
                200,
                json={
                    "from": params["from"],
                    "to": params["to"],
                    "page_size": self.page_size,
                    "next_page_token": str(start + self.page_size) if more else "",
                    "sessions": items,
                },
            )
        parts = path.strip("/").split("/")
        if (
            request.method == "PUT"
            and parts[:2] == ["videosdk", "sessions"]
            and parts[3:] == ["status"]
        ):
            session_id = unquote(unquote(parts[2]))
            session = self.sessions.get(session_id)
            if session is None or not session["live"]:
                return error(404, 3001, "Session does not exist.")
            assert body == {"action": "end"}
            session["live"] = False
            return httpx.Response(204)
        if (
            request.method == "DELETE"
            and parts[:2] == ["videosdk", "sessions"]
            and parts[3:4] == ["recordings"]
            and len(parts) == 5
        ):
            assert request.url.params.get("action") == "delete"
            key = (unquote(unquote(parts[2])), unquote(parts[4]))
            if key not in self.recordings:
                return error(404, 3301, "There is no recording for this session.")
            self.recordings.discard(key)
            return httpx.Response(204)
        if (
            request.method == "DELETE"
            and parts[:2] == ["videosdk", "sessions"]
            and parts[3:] == ["recordings"]
        ):
            # "Delete session's recordings": every file of the session; action=delete is
            # for good (the default, trash, keeps them 30 days).
            session_id = unquote(unquote(parts[2]))
            assert request.url.params.get("action") == "delete"
            files = {key for key in self.recordings if key[0] == session_id}
            if not files:
                return error(404, 3301, "There is no recording for this session.")
            self.recordings -= files
            return httpx.Response(204)
        return error(404, 404, "Not found")


def make(fake: FakeZoom, **config: Any) -> ZoomProvider:
    settings: dict[str, Any] = {
        "sdk_key": SDK_KEY,
        "sdk_secret": SDK_SECRET,
        "join_page": JOIN_PAGE,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "webhook_secret": HOOK_SECRET,
    } | config
    return ZoomProvider(ZoomConfig(**settings), http=client(fake), clock=clock)


@pytest.fixture
def fake() -> FakeZoom:
    return FakeZoom()


@pytest.fixture
def provider(fake: FakeZoom) -> ZoomProvider:
    return make(fake)


def test_is_a_video_provider_that_answers_challenges(provider: ZoomProvider) -> None:
    assert isinstance(provider, VideoProvider) and isinstance(provider, WebhookChallenges)
    assert provider.name == "zoom-video-sdk"


# -- rooms -------------------------------------------------------------------------------


async def test_create_room_is_idempotent_and_needs_no_call(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    room = await provider.create_room("appt-1", max_participants=2)
    again = await make(fake).create_room("appt-1")
    assert room == again and fake.calls == []
    assert room.provider == "zoom-video-sdk" and room.room_id == room.name
    assert room.name.startswith("v-") and "appt-1" not in room.name
    assert len(room.name) <= 36 and room.join_url == JOIN_PAGE
    assert await provider.room(room.room_id) == room
    assert Room.from_dict(json.loads(json.dumps(room.to_dict()))) == room


async def test_close_ends_the_live_session_and_is_idempotent(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.start(room.name.upper(), "Uf8+8hQ9TxqGg1PY/ZPi1w==")  # names are case-insensitive
    fake.start("v-someone-else", "other==")
    await provider.close_room(room)
    assert not fake.sessions["Uf8+8hQ9TxqGg1PY/ZPi1w=="]["live"]
    assert fake.sessions["other=="]["live"]
    put = [c for c in fake.calls if c[0] == "PUT"]
    assert put == [("PUT", "/videosdk/sessions/Uf8%2B8hQ9TxqGg1PY%2FZPi1w%3D%3D/status", put[0][2])]
    await provider.close_room(room)  # nothing live any more: only the listing
    assert [c[0] for c in fake.calls].count("PUT") == 1


async def test_a_session_id_with_a_slash_first_is_encoded_twice(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.start(room.name, "/abc//def==")
    await provider.close_room(room)
    [put] = [c for c in fake.calls if c[0] == "PUT"]
    assert put[1] == "/videosdk/sessions/%252Fabc%252F%252Fdef%253D%253D/status"
    assert not fake.sessions["/abc//def=="]["live"]


async def test_close_follows_the_listing_pages(fake: FakeZoom, provider: ZoomProvider) -> None:
    fake.page_size = 2
    room = await provider.create_room("appt-1")
    for n in range(4):
        fake.start(f"v-other-{n}", f"other-{n}")
    fake.start(room.name, "ours")
    await provider.close_room(room)
    assert not fake.sessions["ours"]["live"]
    assert [c[0] for c in fake.calls].count("GET") == 3


async def test_a_session_ended_meanwhile_is_success(fake: FakeZoom, provider: ZoomProvider) -> None:
    room = await provider.create_room("appt-1")
    fake.start(room.name, "s1")
    original = fake.__call__

    def ended_meanwhile(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            fake.sessions["s1"]["live"] = False
        return original(request)

    await ZoomProvider(provider.config, http=client(ended_meanwhile), clock=clock).close_room(room)


async def test_without_api_credentials_close_calls_nothing(fake: FakeZoom) -> None:
    provider = make(fake, api_key=None, api_secret=None)
    room = await provider.create_room("appt-1")
    fake.start(room.name, "s1")
    await provider.close_room(room)
    assert fake.calls == [] and fake.sessions["s1"]["live"]


async def test_bad_api_credentials_are_a_provider_error(fake: FakeZoom) -> None:
    provider = make(fake, api_secret="another-api-secret-0123456789abcdef")
    room = await provider.create_room("appt-1")
    with pytest.raises(ProviderError) as caught:
        await provider.close_room(room)
    assert caught.value.provider_status == 401 and "credentials" in str(caught.value)
    assert not isinstance(caught.value, ProviderUnavailable)


async def test_a_plan_without_the_api_is_a_provider_error(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.fail.append(error(400, 200, "No permission."))
    with pytest.raises(ProviderError) as caught:
        await provider.close_room(room)
    assert caught.value.provider_status == 400 and "No permission" in str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [
        error(429, 429, "You have reached the maximum per-second rate limit for this API."),
        error(500, 500, "internal error"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
    ],
)
async def test_outages_are_retryable_and_a_retry_succeeds(
    fake: FakeZoom, provider: ZoomProvider, failure: httpx.Response | Exception
) -> None:
    room = await provider.create_room("appt-1")
    fake.start(room.name, "s1")
    fake.fail.append(failure)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.close_room(room)
    assert caught.value.status == 503
    await provider.close_room(room)
    assert not fake.sessions["s1"]["live"]


async def test_rate_limit_carries_retry_after(fake: FakeZoom, provider: ZoomProvider) -> None:
    room = await provider.create_room("appt-1")
    limited = error(429, 429, "rate limit")
    limited.headers["Retry-After"] = "7"
    fake.fail.append(limited)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.close_room(room)
    assert caught.value.retry_after == 7 and caught.value.headers == {"Retry-After": "7"}


# -- participant tokens -----------------------------------------------------------------


@pytest.mark.parametrize(("role", "role_type"), [("host", 1), ("guest", 0)])
async def test_session_token_claims(provider: ZoomProvider, role: str, role_type: int) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, DOCTOR, "Dr Who", role, timedelta(hours=1))  # type: ignore[arg-type]
    assert issued.token is not None
    got = claims(issued.token, SDK_SECRET)
    assert got["app_key"] == SDK_KEY and got["tpc"] == room.name
    assert got["role_type"] == role_type and got["version"] == 1
    assert got["session_key"] == room.name
    assert got["iat"] == int(NOW.timestamp())
    assert got["exp"] == int((NOW + timedelta(hours=1)).timestamp())
    assert identity_from_user_key(got["user_identity"]) == DOCTOR
    assert len(got["user_identity"]) <= 35
    assert issued.role == role and issued.expires_at == NOW + timedelta(hours=1)
    url = urlsplit(issued.join_url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == JOIN_PAGE and not url.query
    assert parse_qs(url.fragment) == {
        "session": [room.name],
        "token": [issued.token],
        "name": ["Dr Who"],
    }


async def test_a_short_ttl_is_raised_to_zooms_thirty_minutes(provider: ZoomProvider) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/p1", "Pat", "guest", timedelta(minutes=10))
    assert issued.token is not None
    got = claims(issued.token, SDK_SECRET)
    assert got["exp"] - got["iat"] == 1800
    assert issued.expires_at == NOW + timedelta(minutes=30)
    assert got["user_identity"] == "Patient/p1"


async def test_tokens_are_checked(provider: ZoomProvider) -> None:
    room = await provider.create_room("appt-1")
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(days=2))
    with pytest.raises(ValueError):
        provider.participant_token(room, " ", "Pat", "guest", timedelta(minutes=5))
    other = Room("daily", room.room_id, room.name, room.join_url)
    with pytest.raises(ValueError):
        provider.participant_token(other, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None
    with pytest.raises(Exception):  # noqa: B017 - any failure to verify will do
        claims(issued.token, "another-sdk-secret-0123456789abcdef")


@pytest.mark.parametrize(
    ("identity", "sent"),
    [
        ("Patient/p1", "Patient/p1"),
        ("host-0123456789ab", "host-0123456789ab"),
        (DOCTOR, "Practitioner:D4-tW9nLRp-hZXCGdyiVDg"),
        ("Patient/0F8FAD5B-D9CB-469F-A165-70867728950E", None),  # not the canonical spelling
        ("Practitioner/" + "x" * 40, None),
        ("odd:identity", None),
    ],
)
def test_user_identity_fits_zooms_35_characters(identity: str, sent: str | None) -> None:
    assert user_identity(identity) == sent
    if sent is not None:
        assert len(sent) <= 35 and identity_from_user_key(sent) == identity


# -- webhooks -----------------------------------------------------------------------------


def hook(event: str, **object_: Any) -> bytes:
    body = {
        "event": event,
        "event_ts": int(NOW.timestamp() * 1000),
        "payload": {
            "account_id": "D8cJuqWVQ623CI4Q8yQK0Q",
            "object": {
                "id": "Uf8+8hQ9TxqGg1PY/ZPi1w==",
                "session_id": "Uf8+8hQ9TxqGg1PY/ZPi1w==",
                "session_name": "v-0123",
                "session_key": "v-0123",
            }
            | object_,
        },
    }
    return json.dumps(body).encode()


def signed(
    body: bytes, secret: str = HOOK_SECRET, at: float | None = None, **extra: str
) -> dict[str, str]:
    stamp = str(int(NOW.timestamp() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "x-zm-request-timestamp": stamp,
        "x-zm-signature": f"v0={digest.hexdigest()}",
        "Content-Type": "application/json",
    } | extra


USER = {
    "id": "16778240",
    "name": "Dr Who",
    "user_key": "Practitioner:D4-tW9nLRp-hZXCGdyiVDg",
    "participant_uuid": "4bfa1c2e-5d1a-4c2f-9a64-1d6f0bb3f0a1",
}


def test_webhook_user_joined(provider: ZoomProvider) -> None:
    body = hook("session.user_joined", user=USER | {"join_time": "2030-05-17T09:29:15Z"})
    [got] = provider.parse_webhook(signed(body), body)
    assert got.kind == "participant-joined" and got.room_id == "v-0123"
    assert got.participant_identity == DOCTOR and got.participant_display == "Dr Who"
    assert got.participant_sid == USER["participant_uuid"]
    assert got.at == NOW - timedelta(seconds=45)
    assert got.event_id == hashlib.sha256(body).hexdigest()[:32]
    assert provider.webhook_challenge(signed(body), body) is None


def test_webhook_user_left_and_session_ended(provider: ZoomProvider) -> None:
    body = hook("session.user_left", user=USER | {"leave_time": "2030-05-17T09:45:00Z"})
    [left] = provider.parse_webhook(signed(body), body)
    assert left.kind == "participant-left" and left.at == NOW + timedelta(minutes=15)
    body = hook("session.ended", session_name="V-0123", end_time="2030-05-17T09:50:00Z")
    [ended] = provider.parse_webhook(signed(body), body)
    assert ended.kind == "room-ended" and ended.room_id == "v-0123"
    assert ended.at == NOW + timedelta(minutes=20)
    body = hook("session.ended")  # no end_time: the event's own time (milliseconds)
    [ended] = provider.parse_webhook(signed(body), body)
    assert ended.at == NOW


def test_webhook_events_we_do_not_track_are_verified_then_ignored(provider: ZoomProvider) -> None:
    body = hook("session.sharing_started", user=USER)
    assert provider.parse_webhook(signed(body), body) == []
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(body, secret="wrong-secret-token"), body)


DOWNLOAD_TOKEN = "abJhbGciOiJIUzUxMiJ9.download-token-of-this-delivery"
FILES = [
    {
        "id": "a2f19f96-9294-4f51-8134-6f0eea108eb2",
        "recording_start": "2030-05-17T09:00:00Z",
        "recording_end": "2030-05-17T09:20:00Z",
        "file_type": "MP4",
        "file_size": 7220,
        "download_url": "https://zoom.us/rec/webhook_download/Qg75t7xZBtEbAkjdlgbfdngBBBB",
        "status": "completed",
        "recording_type": "shared_screen_with_speaker_view",
    },
    {
        "id": "b3f19f96-9294-4f51-8134-6f0eea108eb3",
        "recording_start": "2030-05-17T09:00:00Z",
        "recording_end": "2030-05-17T09:20:00Z",
        "file_type": "M4A",
        "file_size": 2048,
        "download_url": "https://zoom.us/rec/webhook_download/Ab75t7xZBtEbAkjdlgbfdngCCCC?x=1",
        "status": "completed",
        "recording_type": "audio_only",
    },
    {
        "id": "c4f19f96-9294-4f51-8134-6f0eea108eb4",
        "recording_start": "2030-05-17T09:00:00Z",
        "recording_end": "2030-05-17T09:20:00Z",
        "file_type": "CHAT",
        "download_url": "https://zoom.us/rec/webhook_download/chat",
        "status": "completed",
    },
    {
        "id": "d5f19f96-9294-4f51-8134-6f0eea108eb5",
        "recording_start": "2030-05-17T09:00:00Z",
        "recording_end": "2030-05-17T09:20:00Z",
        "file_type": "TRANSCRIPT",
        "download_url": "https://zoom.us/rec/webhook_download/transcript",
        "status": "completed",
    },
    # Zoom lists closed captions and timelines without an id of their own.
    {"file_type": "CC", "download_url": "https://zoom.us/rec/webhook_download/cc"},
]
SESSION_ID = "Uf8+8hQ9TxqGg1PY/ZPi1w=="


def recording_hook(files: list[dict[str, Any]] = FILES, session_id: str = SESSION_ID) -> bytes:
    body = json.loads(
        hook("session.recording_completed", recording_files=files, session_id=session_id)
    )
    body["download_token"] = DOWNLOAD_TOKEN
    return json.dumps(body).encode()


def test_webhook_recording_completed_gives_one_event_per_file(provider: ZoomProvider) -> None:
    """Every file Zoom keeps of the recording (video, audio, chat, transcript) is under
    the same Consent: each one is linked, or each one discarded."""
    body = recording_hook()
    video, audio, chat, transcript = provider.parse_webhook(signed(body), body)
    assert (video.kind, video.room_id) == ("recording-ready", "v-0123")
    assert video.recording is not None and audio.recording is not None
    assert chat.recording is not None and transcript.recording is not None
    assert video.recording.recording_id == f"{SESSION_ID}:{FILES[0]['id']}"
    assert [e.recording.content_type for e in (video, audio, chat, transcript) if e.recording] == [
        "video/mp4",
        "audio/mp4",
        "text/plain",
        "text/vtt",
    ]
    assert (chat.recording.title, transcript.recording.title) == (
        "Chat of the virtual visit",
        "Transcript of the virtual visit",
    )
    assert video.recording.url == FILES[0]["download_url"]
    assert audio.recording.url == "https://zoom.us/rec/webhook_download/Ab75t7xZBtEbAkjdlgbfdngCCCC"
    assert (video.recording.size, video.recording.duration) == (7220, 1200.0)
    assert video.at == video.recording.started and video.event_id != audio.event_id
    assert len({e.event_id for e in (video, audio, chat, transcript)}) == 4
    assert DOWNLOAD_TOKEN not in repr((video, audio)), "the download token is a credential"


def test_a_download_url_keeps_no_user_information(provider: ZoomProvider) -> None:
    files = [FILES[0] | {"download_url": "https://user:secret@Zoom.us:8443/rec/x?token=t"}]
    body = recording_hook(files)
    [video] = provider.parse_webhook(signed(body), body)
    assert video.recording is not None and video.recording.url == "https://zoom.us:8443/rec/x"


def test_a_session_id_with_a_colon_is_not_mistaken_for_a_file_id(provider: ZoomProvider) -> None:
    """A recording's id is "{session id}:{file id}": Zoom's base64 session ids never hold
    ":", so one that does is not ours to take apart, and a file id may hold any."""
    body = recording_hook(session_id="odd:session")
    assert provider.parse_webhook(signed(body), body) == []
    body = recording_hook([FILES[0] | {"id": "file:with:colons:"}])
    [video] = provider.parse_webhook(signed(body), body)
    assert video.recording is not None
    assert video.recording.recording_id == f"{SESSION_ID}:file:with:colons:"


async def test_delete_recording_deletes_every_file_of_the_session_for_good(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    """Chat, transcript and caption files are deleted with the video: the session's
    recordings whole, with action=delete (not the 30 days' trash)."""
    body = recording_hook([FILES[0] | {"id": "file:id:"}])
    [video] = provider.parse_webhook(signed(body), body)
    assert video.recording is not None
    fake.recordings |= {(SESSION_ID, "file:id:"), (SESSION_ID, "chat"), (SESSION_ID, "cc")}
    fake.recordings.add(("another-session", "x"))
    assert await provider.delete_recording(video.recording) is True
    assert fake.recordings == {("another-session", "x")}
    method, path, _ = fake.calls[-1]
    assert method == "DELETE" and path.endswith("/recordings")
    assert "Uf8%252B8hQ9TxqGg1PY%252FZPi1w%253D%253D" not in path  # encoded once: no "//"
    assert await provider.delete_recording(video.recording) is True  # gone already
    fake.fail.append(error(503, 503, "busy"))
    with pytest.raises(ProviderUnavailable):
        await provider.delete_recording(video.recording)
    without_api = make(fake, api_key=None, api_secret=None)
    assert await without_api.delete_recording(video.recording) is False


async def test_delete_recording_spares_the_files_linked_to_the_record(
    fake: FakeZoom, provider: ZoomProvider
) -> None:
    """With a file of the session linked, deleting the whole session would take it too:
    only the one file goes."""
    body = recording_hook()
    video, _, _, transcript = provider.parse_webhook(signed(body), body)
    assert video.recording is not None and transcript.recording is not None
    fake.recordings |= {(SESSION_ID, FILES[0]["id"]), (SESSION_ID, FILES[3]["id"])}
    linked = [video.recording.recording_id]
    assert await provider.delete_recording(transcript.recording, linked) is True
    assert fake.recordings == {(SESSION_ID, FILES[0]["id"])}
    method, path, _ = fake.calls[-1]
    assert method == "DELETE" and path.endswith(f"/recordings/{FILES[3]['id']}")


def test_url_validation_challenge_is_answered(provider: ZoomProvider) -> None:
    body = json.dumps(
        {
            "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
            "event_ts": 1654503849680,
            "event": "endpoint.url_validation",
        }
    ).encode()
    answer = provider.webhook_challenge(signed(body), body)
    expected = hmac.new(HOOK_SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256)
    assert answer == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": expected.hexdigest(),
    }
    assert provider.parse_webhook(signed(body), body) == []
    with pytest.raises(WebhookRejected):  # a forged challenge gets no answer
        provider.webhook_challenge(signed(body, secret="guessed-secret"), body)
    empty = json.dumps({"event": "endpoint.url_validation", "payload": {}}).encode()
    with pytest.raises(WebhookRejected):
        provider.webhook_challenge(signed(empty), empty)


def forged(body: bytes) -> dict[str, str]:
    return signed(body, secret="guessed-secret-token-0123456789")


def altered(body: bytes) -> dict[str, str]:
    return signed(body.replace(b"Dr Who", b"Dr Evil"))


def stale(body: bytes) -> dict[str, str]:
    return signed(body, at=NOW.timestamp() - 301)  # a captured delivery, replayed later


def future(body: bytes) -> dict[str, str]:
    return signed(body, at=NOW.timestamp() + 301)


def retimed(body: bytes) -> dict[str, str]:
    # A fresh timestamp on an old signature: the signature covers the timestamp.
    headers = signed(body, at=NOW.timestamp() - 3600)
    return headers | {"x-zm-request-timestamp": str(int(NOW.timestamp()))}


def unsigned(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json"}


def bad_timestamp(body: bytes) -> dict[str, str]:
    headers = signed(body)
    digest = hmac.new(HOOK_SECRET.encode(), b"v0:soon:" + body, hashlib.sha256).hexdigest()
    return headers | {"x-zm-request-timestamp": "soon", "x-zm-signature": f"v0={digest}"}


@pytest.mark.parametrize(
    "headers_for", [forged, altered, stale, future, retimed, unsigned, bad_timestamp]
)
def test_webhook_that_cannot_be_verified_is_rejected(
    provider: ZoomProvider, headers_for: Any
) -> None:
    body = hook("session.user_joined", user=USER)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers_for(body), body)
    with pytest.raises(WebhookRejected):
        provider.webhook_challenge(headers_for(body), body)


def test_a_delivery_within_five_minutes_is_accepted(provider: ZoomProvider) -> None:
    body = hook("session.user_joined", user=USER)
    assert provider.parse_webhook(signed(body, at=NOW.timestamp() - 299), body)


def test_webhook_without_a_configured_secret_rejects_everything(fake: FakeZoom) -> None:
    provider = make(fake, webhook_secret=None)
    body = hook("session.user_joined", user=USER)
    with pytest.raises(WebhookRejected, match="not configured"):
        provider.parse_webhook(signed(body), body)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"event": "session.user_joined"}).encode(),
        json.dumps({"event": "session.user_joined", "payload": {"object": {}}}).encode(),
        hook("session.user_joined"),  # no user
    ],
)
def test_signed_body_that_is_not_an_event_is_rejected(provider: ZoomProvider, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(body), body)


def test_a_jwt_is_not_a_webhook_signature(provider: ZoomProvider) -> None:
    body = hook("session.user_joined", user=USER)
    token = sign({"sha256": hashlib.sha256(body).hexdigest()}, HOOK_SECRET)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({"Authorization": f"Bearer {token}"}, body)


# -- secrets ------------------------------------------------------------------------------


async def test_no_secret_in_reprs_or_error_messages(fake: FakeZoom, provider: ZoomProvider) -> None:
    texts = [repr(provider.config), str(provider.config)]
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, DOCTOR, "Dr Who", "host", timedelta(minutes=5))
    texts += [repr(room), repr(issued)]

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["Authorization"]
        return error(
            400, 300, f"bad {sent} {SDK_KEY} {SDK_SECRET} {API_KEY} {API_SECRET} {HOOK_SECRET}"
        )

    echoing = ZoomProvider(provider.config, http=client(echo), clock=clock)
    with pytest.raises(ProviderError) as caught:
        await echoing.close_room(room)
    texts += [str(caught.value), repr(caught.value)]
    assert "***" in str(caught.value)
    body = hook("session.user_joined", user=USER)
    for headers in (forged(body), stale(body)):
        with pytest.raises(WebhookRejected) as rejected:
            provider.parse_webhook(headers, body)
        texts.append(str(rejected.value))
    assert issued.token is not None
    assert_no_secrets(texts, [SDK_SECRET, SDK_KEY, API_SECRET, API_KEY, HOOK_SECRET, issued.token])


def test_config_is_checked() -> None:
    base: dict[str, Any] = {"sdk_key": SDK_KEY, "sdk_secret": SDK_SECRET, "join_page": JOIN_PAGE}
    ZoomConfig(**base)
    for wrong in (
        {"sdk_secret": ""},
        {"api_key": API_KEY},  # without its secret
        {"join_page": "clinic.example.org/video"},
        {"join_page": JOIN_PAGE + "#x"},
        {"room_prefix": "visit-"},  # the session name would not fit session_key
        {"timeout": 0},
    ):
        with pytest.raises(ValueError) as caught:
            ZoomConfig(**(base | wrong))
        assert SDK_SECRET not in str(caught.value)


async def test_aclose_leaves_an_injected_client_open(fake: FakeZoom) -> None:
    http = client(fake)
    provider = ZoomProvider(
        ZoomConfig(sdk_key=SDK_KEY, sdk_secret=SDK_SECRET, join_page=JOIN_PAGE), http=http
    )
    await provider.aclose()
    assert not http.is_closed
    await http.aclose()
