"""100ms provider contract tests against a fake server-side API v2 on `httpx.MockTransport`.

The fake follows 100ms.live/docs/server-side/v2: "Authentication and tokens" (management
token: HS256, access_key, type "management", version 2, iat, nbf, exp, jti, as Bearer; app
token: access_key, room_id, user_id, role, type "app", version 2), "Create a room"
(`POST /v2/rooms`; an existing name returns that room; names case-insensitive), "Create
Room Codes" (`POST /v2/room-codes/room/<room_id>` -> `{"data": [{code, role, enabled}]}`,
404 room not found, 403 room disabled), "End an active room" (`POST
/v2/active-rooms/<room_id>/end-room` `{reason, lock}` -> `{"message": "session is
ending"}`; no active session: 404), the room object ("enabled": a disabled room cannot be
joined later; `POST /v2/rooms/<room_id>` updates it), "Room Links" (Prebuilt
`https://<subdomain>/meeting/<room-code>` with `name` and `userId` query parameters) and
"Webhook" (JSON events `id`, `type`, `timestamp`, `data`; custom headers passed through).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fhirserver.telehealth.providers import (
    HmsConfig,
    HmsProvider,
    ProviderError,
    ProviderUnavailable,
    Room,
    VideoProvider,
    WebhookRejected,
)
from tests.telehealth.providers.helpers import (
    NOW,
    assert_no_secrets,
    bearer_claims,
    claims,
    client,
    clock,
)

ACCESS_KEY = "6f1a2b3c4d5e6f7a8b9c0d1e"
SECRET = "hms-app-secret-0123456789abcdef0123"
HOOK_SECRET = "hook-secret-fedcba9876543210"
PREBUILT = "clinic.app.100ms.live"
BASE = "https://api.100ms.live/v2"


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": status, "message": message})


class FakeHms:
    """The parts of the 100ms REST API the provider uses, with 100ms's answers."""

    def __init__(self, roles: tuple[str, ...] = ("host", "guest")) -> None:
        self.roles = roles
        self.rooms: dict[str, dict[str, Any]] = {}  # id -> room object
        self.active: set[str] = set()  # room ids with a live session
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: list[httpx.Response | Exception] = []

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.rooms.values() if r["name"] == name.lower()), None)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        assert request.url.host == "api.100ms.live"
        try:
            token = bearer_claims(request, SECRET)
        except Exception:
            return error(401, "Authentication Error")
        if (
            token.get("type") != "management"
            or token.get("version") != 2
            or token.get("access_key") != ACCESS_KEY
            or not token.get("jti")
            or not token["nbf"] <= NOW.timestamp() < token["exp"]
        ):
            return error(401, "Authentication Error")
        path = request.url.path.removeprefix("/v2")
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, path, body))
        parts = path.strip("/").split("/")
        if request.method == "GET" and path == "/rooms":
            name = request.url.params.get("name", "").lower()
            return httpx.Response(
                200, json={"data": [r for r in self.rooms.values() if r["name"] == name]}
            )
        assert request.method == "POST"
        if path == "/rooms":
            room = self.by_name(body["name"])
            if room is None:
                room_id = f"{len(self.rooms) + 1:024x}"
                room = {
                    "id": room_id,
                    "name": body["name"].lower(),
                    "enabled": True,
                    "description": body.get("description", ""),
                    "template_id": body.get("template_id", "default-template"),
                    "region": "us",
                    "size": body.get("size"),
                    "codes": {role: f"{room_id[-3:]}-{role[:4]}-abc" for role in self.roles},
                }
                self.rooms[room_id] = room
            return httpx.Response(200, json={k: v for k, v in room.items() if k != "codes"})
        if parts[:2] == ["room-codes", "room"]:
            room = self.rooms.get(parts[2])
            if room is None:
                return error(404, "Room not found")
            if not room["enabled"]:
                return error(403, "Room is disabled")
            data = [
                {"code": code, "room_id": room["id"], "role": role, "enabled": True}
                for role, code in room["codes"].items()
            ]
            return httpx.Response(200, json={"data": data})
        if parts[0] == "active-rooms" and parts[2] == "end-room":
            room_id = parts[1]
            if room_id not in self.active:
                return error(404, "active room not found")
            self.active.discard(room_id)
            if body.get("lock"):
                self.rooms[room_id]["enabled"] = False
            return httpx.Response(200, json={"message": "session is ending"})
        if parts[0] == "rooms" and len(parts) == 2:
            room = self.rooms.get(parts[1])
            if room is None:
                return error(404, "room not found")
            room.update(body)
            return httpx.Response(200, json={k: v for k, v in room.items() if k != "codes"})
        return error(404, "not found")


def make(fake: FakeHms, **config: Any) -> HmsProvider:
    settings: dict[str, Any] = {
        "access_key": ACCESS_KEY,
        "app_secret": SECRET,
        "prebuilt_domain": PREBUILT,
        "template_id": "tmpl-visit",
        "webhook_secret": HOOK_SECRET,
    } | config
    return HmsProvider(HmsConfig(**settings), http=client(fake), clock=clock)


@pytest.fixture
def fake() -> FakeHms:
    return FakeHms()


@pytest.fixture
def provider(fake: FakeHms) -> HmsProvider:
    return make(fake)


def test_is_a_video_provider(provider: HmsProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert provider.name == "100ms"


# -- rooms -------------------------------------------------------------------------------


async def test_create_room_is_idempotent_and_fetches_room_codes(
    fake: FakeHms, provider: HmsProvider
) -> None:
    room = await provider.create_room("appt-1", max_participants=4)
    again = await make(fake).create_room("appt-1", max_participants=4)
    assert room == again
    assert len(fake.rooms) == 1
    stored = fake.rooms[room.room_id]
    assert room.provider == "100ms" and room.name == stored["name"]
    assert room.name.startswith("visit-") and "appt-1" not in room.name
    assert stored["template_id"] == "tmpl-visit" and stored["size"] == 4
    codes = stored["codes"]
    assert room.extra == {"room_code:host": codes["host"], "room_code:guest": codes["guest"]}
    assert room.join_url == f"https://{PREBUILT}/meeting/{codes['guest']}"
    method, path, body = fake.calls[0]
    assert (method, path) == ("POST", "/rooms")
    assert body == {
        "name": room.name,
        "description": "Virtual visit",
        "template_id": "tmpl-visit",
        "size": 4,
    }
    assert fake.calls[1][:2] == ("POST", f"/room-codes/room/{room.room_id}")
    assert "room_code" not in repr(room) and codes["guest"] in room.join_url


async def test_room_webhook_is_registered_when_configured(fake: FakeHms) -> None:
    provider = make(fake, webhook_url="https://fhir.example.org/telehealth/webhooks/100ms")
    await provider.create_room("appt-1")
    body = fake.calls[0][2]
    assert body["webhook"] == {
        "url": "https://fhir.example.org/telehealth/webhooks/100ms",
        "headers": {"X-Webhook-Secret": HOOK_SECRET},
    }


async def test_duplicate_name_conflict_finds_the_existing_room(
    fake: FakeHms, provider: HmsProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.fail.append(error(409, "room with this name already exists"))
    again = await provider.create_room("appt-1")
    assert again == room and len(fake.rooms) == 1
    assert ("GET", "/rooms", None) in fake.calls


async def test_close_an_active_room_ends_the_session_and_disables_it(
    fake: FakeHms, provider: HmsProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.active.add(room.room_id)
    await provider.close_room(room)
    assert room.room_id not in fake.active
    assert fake.rooms[room.room_id]["enabled"] is False
    end = ("POST", f"/active-rooms/{room.room_id}/end-room")
    assert next(c for c in fake.calls if c[:2] == end)[2] == {
        "reason": "The visit has ended",
        "lock": True,
    }
    # The room codes stop working: 100ms answers 403 "Room is disabled".
    with pytest.raises(ProviderError) as caught:
        await provider.create_room("appt-1")
    assert caught.value.provider_status == 403


async def test_close_without_a_session_still_disables_and_is_idempotent(
    fake: FakeHms, provider: HmsProvider
) -> None:
    room = await provider.create_room("appt-1")
    await provider.close_room(room)  # end-room: 404 (no session), then disable
    assert fake.rooms[room.room_id]["enabled"] is False
    await provider.close_room(room)
    assert fake.calls[-1] == ("POST", f"/rooms/{room.room_id}", {"enabled": False})


async def test_a_room_survives_storage(provider: HmsProvider) -> None:
    room = await provider.create_room("appt-1")
    stored = json.loads(json.dumps(room.to_dict()))
    assert Room.from_dict(stored) == room
    issued = provider.participant_token(
        Room.from_dict(stored), "Patient/1", "Pat", "guest", timedelta(minutes=5)
    )
    assert issued.join_url.startswith(room.join_url + "?")
    with pytest.raises(ValueError):
        Room.from_dict({"provider": "100ms", "room_id": 1})


async def test_close_a_room_that_never_materialised(fake: FakeHms, provider: HmsProvider) -> None:
    room = Room("100ms", "ffffffffffffffffffffffff", "visit-x", f"https://{PREBUILT}/meeting/x")
    await provider.close_room(room)
    assert [c[:2] for c in fake.calls] == [
        ("POST", f"/active-rooms/{room.room_id}/end-room"),
        ("POST", f"/rooms/{room.room_id}"),
    ]


async def test_bad_credentials_are_a_provider_error(fake: FakeHms) -> None:
    wrong = make(fake, app_secret="another-app-secret-0123456789abcdef")
    with pytest.raises(ProviderError) as caught:
        await wrong.create_room("appt-1")
    assert caught.value.provider_status == 401 and "credentials" in str(caught.value)
    assert fake.rooms == {}


@pytest.mark.parametrize(
    "failure",
    [
        error(429, "rate limit exceeded"),
        error(500, "internal error"),
        error(502, "bad gateway"),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("timed out"),
    ],
)
async def test_outages_are_retryable_and_a_retry_succeeds(
    fake: FakeHms, provider: HmsProvider, failure: httpx.Response | Exception
) -> None:
    fake.fail.append(failure)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_room("appt-1")
    assert caught.value.status == 503 and caught.value.code == "transient"
    room = await provider.create_room("appt-1")
    assert list(fake.rooms) == [room.room_id]


async def test_outage_while_fetching_room_codes_is_retryable(
    fake: FakeHms, provider: HmsProvider
) -> None:
    fake_calls = fake.calls
    original = fake.__call__

    def flaky(request: httpx.Request) -> httpx.Response:
        if "/room-codes/" in request.url.path and not any("room-codes" in c[1] for c in fake_calls):
            fake_calls.append(("POST", "/room-codes (failed)", None))
            return error(503, "unavailable")
        return original(request)

    provider = HmsProvider(provider.config, http=client(flaky), clock=clock)
    with pytest.raises(ProviderUnavailable):
        await provider.create_room("appt-1")
    room = await provider.create_room("appt-1")
    assert len(fake.rooms) == 1 and "room_code:guest" in room.extra


async def test_refusal_on_end_room_is_a_provider_error(
    fake: FakeHms, provider: HmsProvider
) -> None:
    room = await provider.create_room("appt-1")
    fake.fail.append(error(400, "invalid request"))
    with pytest.raises(ProviderError) as caught:
        await provider.close_room(room)
    assert caught.value.provider_status == 400
    assert not isinstance(caught.value, ProviderUnavailable)


async def test_a_template_without_the_guest_role_is_a_provider_error() -> None:
    provider = make(FakeHms(roles=("host", "viewer")))
    with pytest.raises(ProviderError, match="guest"):
        await provider.create_room("appt-1")


# -- participant tokens -----------------------------------------------------------------


@pytest.mark.parametrize(("role", "hms_role"), [("host", "doctor"), ("guest", "patient")])
async def test_app_token_claims_and_prebuilt_link(role: str, hms_role: str) -> None:
    fake = FakeHms(roles=("doctor", "patient"))
    provider = make(fake, host_role="doctor", guest_role="patient")
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat Doe", role, timedelta(minutes=15))  # type: ignore[arg-type]
    assert issued.token is not None
    got = claims(issued.token, SECRET)
    assert got["access_key"] == ACCESS_KEY and got["type"] == "app" and got["version"] == 2
    assert got["room_id"] == room.room_id and got["user_id"] == "Patient/1"
    assert got["role"] == hms_role and got["jti"]
    assert got["iat"] == got["nbf"] == int(NOW.timestamp())
    assert got["exp"] == int((NOW + timedelta(minutes=15)).timestamp())
    assert issued.expires_at == NOW + timedelta(minutes=15) and issued.role == role
    url = urlsplit(issued.join_url)
    code = fake.rooms[room.room_id]["codes"][hms_role]
    assert (url.scheme, url.netloc, url.path) == ("https", PREBUILT, f"/meeting/{code}")
    assert parse_qs(url.query) == {"name": ["Pat Doe"], "userId": ["Patient/1"]}


async def test_tokens_are_unique_and_checked(provider: HmsProvider) -> None:
    room = await provider.create_room("appt-1")
    one = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    two = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert one.token and two.token
    assert claims(one.token, SECRET)["jti"] != claims(two.token, SECRET)["jti"]
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(days=2))
    bare = Room("100ms", room.room_id, room.name, room.join_url)
    with pytest.raises(ProviderError, match="room code"):
        provider.participant_token(bare, "Patient/1", "Pat", "guest", timedelta(minutes=5))


# -- webhooks -----------------------------------------------------------------------------


def hook(kind: str, **data: Any) -> bytes:
    return json.dumps(
        {
            "version": "2.0",
            "id": "6c75de35-b778-4fb0-88ae-114c28dc285f",
            "account_id": "60b8e13a6eb86d8101b57354",
            "timestamp": "2030-05-17T09:29:59Z",
            "type": kind,
            "data": {"room_id": "60b8e13a6eb86d8101b57354", "session_id": "s1"} | data,
        }
    ).encode()


PEER = {"peer_id": "83b869e1", "user_id": "Patient/1", "user_name": "Pat Doe", "role": "guest"}


def test_webhook_peer_join(provider: HmsProvider) -> None:
    body = hook("peer.join.success", joined_at="2030-05-17T09:29:15.001380432Z", **PEER)
    [got] = provider.parse_webhook({"X-Webhook-Secret": HOOK_SECRET}, body)
    assert got.kind == "participant-joined" and got.room_id == "60b8e13a6eb86d8101b57354"
    assert got.participant_identity == "Patient/1" and got.participant_display == "Pat Doe"
    assert got.participant_sid == "83b869e1"
    assert got.event_id == "6c75de35-b778-4fb0-88ae-114c28dc285f"
    assert got.at == NOW - timedelta(seconds=44, microseconds=998620)


def test_webhook_peer_leave_and_session_close(provider: HmsProvider) -> None:
    headers = {"x-webhook-secret": HOOK_SECRET}  # header names are case-insensitive
    body = hook("peer.leave.success", left_at="2030-05-17T09:45:00Z", **PEER)
    [left] = provider.parse_webhook(headers, body)
    assert left.kind == "participant-left" and left.at == NOW + timedelta(minutes=15)
    body = hook("session.close.success", session_stopped_at="2030-05-17T09:50:00Z")
    [ended] = provider.parse_webhook(headers, body)
    assert ended.kind == "room-ended" and ended.at == NOW + timedelta(minutes=20)
    body = hook("session.close.success")  # no stop time: the event timestamp
    [ended] = provider.parse_webhook(headers, body)
    assert ended.at == NOW - timedelta(seconds=1)


def test_webhook_events_we_do_not_track_are_ignored(provider: HmsProvider) -> None:
    body = hook("track.add.success", **PEER)
    assert provider.parse_webhook({"X-Webhook-Secret": HOOK_SECRET}, body) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Webhook-Secret": ""},
        {"X-Webhook-Secret": "hook-secret-fedcba9876543211"},
        {"X-Webhook-Secret": HOOK_SECRET[:-1]},
        {"Authorization": f"Bearer {HOOK_SECRET}"},
    ],
)
def test_webhook_with_a_missing_or_wrong_secret_is_rejected(
    provider: HmsProvider, headers: dict[str, str]
) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers, hook("peer.join.success", **PEER))


def test_webhook_without_a_configured_secret_rejects_everything(fake: FakeHms) -> None:
    provider = make(fake, webhook_secret=None)
    with pytest.raises(WebhookRejected, match="not configured"):
        provider.parse_webhook({"X-Webhook-Secret": ""}, hook("peer.join.success", **PEER))


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'"a string"',
        json.dumps({"type": "peer.join.success"}).encode(),
        json.dumps({"type": "peer.join.success", "data": {"peer_id": "p"}}).encode(),
    ],
)
def test_webhook_bad_body_is_rejected(provider: HmsProvider, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({"X-Webhook-Secret": HOOK_SECRET}, body)


# -- secrets ------------------------------------------------------------------------------


async def test_no_secret_in_reprs_or_error_messages(fake: FakeHms) -> None:
    provider = make(fake, webhook_url="https://fhir.example.org/hooks/100ms")
    texts = [repr(provider.config), str(provider.config)]
    room = await provider.create_room("appt-1")
    texts.append(repr(room))
    issued = provider.participant_token(room, "Patient/1", "Pat", "host", timedelta(minutes=5))
    texts.append(repr(issued))

    def echo(request: httpx.Request) -> httpx.Response:
        sent = request.headers["Authorization"]
        return error(400, f"invalid token {sent} for {ACCESS_KEY} {SECRET} {HOOK_SECRET}")

    echoing = HmsProvider(provider.config, http=client(echo), clock=clock)
    for call in (echoing.create_room("appt-1"), echoing.close_room(room)):
        with pytest.raises(ProviderError) as caught:
            await call
        texts += [str(caught.value), repr(caught.value)]
        assert "***" in str(caught.value)
    with pytest.raises(WebhookRejected) as rejected:
        provider.parse_webhook({"X-Webhook-Secret": "guess"}, hook("peer.join.success"))
    texts.append(str(rejected.value))
    assert issued.token is not None
    # The guest code is the guest join URL by design; the host code must not show anywhere.
    host_code = room.extra["room_code:host"]
    assert_no_secrets(texts, [SECRET, ACCESS_KEY, HOOK_SECRET, issued.token, host_code])


def test_config_is_checked() -> None:
    with pytest.raises(ValueError):
        HmsConfig(access_key=ACCESS_KEY, app_secret="", prebuilt_domain=PREBUILT)
    with pytest.raises(ValueError, match="webhook_secret"):
        HmsConfig(
            access_key=ACCESS_KEY,
            app_secret=SECRET,
            prebuilt_domain=PREBUILT,
            webhook_url="https://x.example/hook",
        )


async def test_room_from_its_id_after_a_restart(fake: FakeHms, provider: HmsProvider) -> None:
    room = await provider.create_room("appt-1")
    again = await make(fake).room(room.room_id)
    assert (again.room_id, again.join_url, again.extra) == (room.room_id, room.join_url, room.extra)
    assert len(fake.rooms) == 1


async def test_room_from_an_unknown_id_is_a_provider_error(provider: HmsProvider) -> None:
    with pytest.raises(ProviderError):
        await provider.room("ffffffffffffffffffffffff")
