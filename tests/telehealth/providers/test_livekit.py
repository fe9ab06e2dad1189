"""LiveKit provider contract tests against a fake RoomService on `httpx.MockTransport`.

The fake follows docs.livekit.io: "Room management" (Twirp: `POST
/twirp/livekit.RoomService/<Method>`, JSON body, `Authorization: Bearer` access token;
CreateRoom returns the existing room for a taken name; DeleteRoom needs `roomCreate` and
answers Twirp `not_found` / HTTP 404 for an unknown room; errors are `{"code", "msg"}` with
the Twirp HTTP status), "Tokens & grants" (iss = API key, sub = identity, name, nbf, exp,
`video` grant) and "Webhooks" (Authorization JWT signed with the API secret whose
`sha256` claim is the base64 SHA-256 of the body; WebhookEvent JSON with `event`,
`room`, `participant`, `id`, `createdAt`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from fhirserver.telehealth.providers import (
    LiveKitConfig,
    LiveKitProvider,
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
    sign,
)

API_KEY = "APIkey123"
SECRET = "livekit-api-secret-0123456789abcdef"
URL = "https://livekit.example.org"
SERVICE = "/twirp/livekit.RoomService/"


class FakeLiveKit:
    """A RoomService that checks what LiveKit checks and answers the way LiveKit does."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: list[httpx.Response | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            failure = self.fail.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        assert request.method == "POST"
        assert request.url.host == "livekit.example.org"
        assert request.url.path.startswith(SERVICE)
        assert request.headers["Content-Type"] == "application/json"
        try:
            grant = bearer_claims(request, SECRET)
        except Exception:
            return twirp(401, "unauthenticated", "invalid token")
        if grant.get("iss") != API_KEY or grant["exp"] <= NOW.timestamp():
            return twirp(401, "unauthenticated", "invalid token")
        if grant.get("video", {}).get("roomCreate") is not True:
            return twirp(403, "permission_denied", "permissions denied")
        method = request.url.path.removeprefix(SERVICE)
        body = json.loads(request.content)
        self.calls.append((method, body))
        if method == "CreateRoom":
            room = self.rooms.setdefault(
                body["name"],
                {
                    "sid": f"RM_{len(self.rooms) + 1}",
                    "name": body["name"],
                    "empty_timeout": body.get("empty_timeout", 300),
                    "max_participants": body.get("max_participants", 0),
                    "creation_time": "1715938200",
                },
            )
            return httpx.Response(200, json=room)
        if method == "DeleteRoom":
            if self.rooms.pop(body["room"], None) is None:
                return twirp(404, "not_found", "room not found")
            return httpx.Response(200, json={})
        return twirp(404, "bad_route", "no handler")


def twirp(status: int, code: str, msg: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "msg": msg}, headers=headers)


def make(fake: FakeLiveKit, **config: Any) -> LiveKitProvider:
    settings: dict[str, Any] = {"url": URL, "api_key": API_KEY, "api_secret": SECRET} | config
    return LiveKitProvider(LiveKitConfig(**settings), http=client(fake), clock=clock)


@pytest.fixture
def fake() -> FakeLiveKit:
    return FakeLiveKit()


@pytest.fixture
def provider(fake: FakeLiveKit) -> LiveKitProvider:
    return make(fake)


def test_is_a_video_provider(provider: LiveKitProvider) -> None:
    assert isinstance(provider, VideoProvider)
    assert provider.name == "livekit"


# -- rooms -------------------------------------------------------------------------------


async def test_create_room_is_idempotent_on_the_key(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    first = await provider.create_room("appt-1", max_participants=3)
    second = await provider.create_room("appt-1", max_participants=3)
    assert first == second
    assert len(fake.rooms) == 1
    assert first.provider == "livekit" and first.room_id == first.name
    assert first.name.startswith("visit-") and "appt-1" not in first.name
    assert first.extra == {"sid": "RM_1"}
    assert first.join_url == "wss://livekit.example.org"
    method, body = fake.calls[0]
    assert method == "CreateRoom"
    assert body == {"name": first.name, "empty_timeout": 900, "max_participants": 3}
    other = await provider.create_room("appt-2")
    assert other.name != first.name and len(fake.rooms) == 2


async def test_create_room_after_a_restart_finds_the_same_room(fake: FakeLiveKit) -> None:
    room = await make(fake).create_room("appt-1")
    again = await make(fake).create_room("appt-1")
    assert again == room and len(fake.rooms) == 1


async def test_create_room_already_exists_is_the_same_room(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    fake.fail.append(twirp(409, "already_exists", "room already exists"))
    room = await provider.create_room("appt-1")
    expected = await provider.create_room("appt-1")
    assert room.name == expected.name and room.room_id == expected.room_id


async def test_close_room_deletes_it_and_is_idempotent(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    room = await provider.create_room("appt-1")
    await provider.close_room(room)
    assert fake.rooms == {}
    await provider.close_room(room)  # Twirp not_found: already gone
    assert [m for m, _ in fake.calls] == ["CreateRoom", "DeleteRoom", "DeleteRoom"]
    assert fake.calls[1][1] == {"room": room.name}


async def test_close_a_room_that_never_materialised(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    room = Room("livekit", "visit-never", "visit-never", "wss://livekit.example.org")
    await provider.close_room(room)
    assert fake.calls == [("DeleteRoom", {"room": "visit-never"})]


async def test_bad_credentials_are_a_provider_error(fake: FakeLiveKit) -> None:
    wrong = make(fake, api_secret="not-the-livekit-secret-at-all-000")
    with pytest.raises(ProviderError) as caught:
        await wrong.create_room("appt-1")
    assert caught.value.provider_status == 401
    assert "unauthenticated" in str(caught.value) and caught.value.status == 502
    assert fake.rooms == {}


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (twirp(403, "permission_denied", "permissions denied"), 403),
        (twirp(400, "invalid_argument", "name too long"), 400),
    ],
)
async def test_refusals_are_provider_errors(
    fake: FakeLiveKit, provider: LiveKitProvider, reply: httpx.Response, status: int
) -> None:
    fake.fail.append(reply)
    with pytest.raises(ProviderError) as caught:
        await provider.create_room("appt-1")
    assert caught.value.provider_status == status
    assert not isinstance(caught.value, ProviderUnavailable)


@pytest.mark.parametrize(
    "failure",
    [
        twirp(503, "unavailable", "no nodes available"),
        twirp(500, "internal", "boom"),
        twirp(429, "resource_exhausted", "slow down"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
    ],
)
async def test_outages_are_retryable_and_a_retry_succeeds(
    fake: FakeLiveKit, provider: LiveKitProvider, failure: httpx.Response | Exception
) -> None:
    fake.fail.append(failure)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_room("appt-1")
    assert caught.value.status == 503
    assert fake.rooms == {}
    room = await provider.create_room("appt-1")
    assert list(fake.rooms) == [room.name]


async def test_outage_on_close_is_retryable(fake: FakeLiveKit, provider: LiveKitProvider) -> None:
    room = await provider.create_room("appt-1")
    fake.fail.append(twirp(502, "unavailable", "bad gateway"))
    with pytest.raises(ProviderUnavailable):
        await provider.close_room(room)
    await provider.close_room(room)
    assert fake.rooms == {}


async def test_rate_limit_carries_retry_after(fake: FakeLiveKit, provider: LiveKitProvider) -> None:
    fake.fail.append(twirp(429, "resource_exhausted", "slow down", **{"Retry-After": "7"}))
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_room("appt-1")
    assert caught.value.retry_after == 7
    assert caught.value.headers == {"Retry-After": "7"}


async def test_a_retry_after_date_is_counted_on_the_providers_clock(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    """RFC 9110 section 10.2.3: Retry-After may be an HTTP date; the seconds until it are
    counted from the clock the provider was given (fixed at NOW here), not the machine's."""
    when = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    fake.fail.append(twirp(429, "resource_exhausted", "slow down", **{"Retry-After": when}))
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.create_room("appt-1")
    assert caught.value.retry_after == 90


async def test_a_non_json_success_is_a_provider_error(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    fake.fail.append(httpx.Response(200, text="<html>not livekit</html>"))
    with pytest.raises(ProviderError, match="not a JSON object"):
        await provider.create_room("appt-1")


# -- participant tokens -----------------------------------------------------------------


@pytest.mark.parametrize("role", ["host", "guest"])
async def test_participant_token_claims(provider: LiveKitProvider, role: str) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(
        room, "Practitioner/7", "Dr Who", role, timedelta(minutes=20)
    )  # type: ignore[arg-type]
    assert issued.token is not None
    got = claims(issued.token, SECRET)
    assert got["iss"] == API_KEY and got["sub"] == "Practitioner/7" and got["name"] == "Dr Who"
    assert got["nbf"] == int(NOW.timestamp())
    assert got["exp"] == int((NOW + timedelta(minutes=20)).timestamp())
    assert issued.expires_at == NOW + timedelta(minutes=20) and issued.role == role
    video = got["video"]
    assert video["room"] == room.name and video["roomJoin"] is True
    assert video["canPublish"] is True and video["canSubscribe"] is True
    assert video["roomAdmin"] is (role == "host")
    assert "roomCreate" not in video
    assert issued.join_url.startswith("https://meet.livekit.io/custom?liveKitUrl=wss%3A%2F%2F")
    assert issued.join_url.endswith("&token=" + issued.token)


async def test_participant_token_is_not_valid_under_another_secret(
    provider: LiveKitProvider,
) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None
    with pytest.raises(Exception):  # noqa: B017 - joserfc's BadSignatureError
        claims(issued.token, "some-other-secret-0123456789abcdef")


async def test_participant_token_checks_its_arguments(provider: LiveKitProvider) -> None:
    room = await provider.create_room("appt-1")
    with pytest.raises(ValueError, match="jitsi"):
        jitsi_room = Room("jitsi", room.room_id, room.name, room.join_url)
        provider.participant_token(jitsi_room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "admin", timedelta(minutes=5))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(0))
    with pytest.raises(ValueError):
        provider.participant_token(room, "", "Pat", "guest", timedelta(minutes=5))


# -- webhooks -----------------------------------------------------------------------------


def event(name: str, **extra: Any) -> bytes:
    data: dict[str, Any] = {
        "event": name,
        "room": {"sid": "RM_1", "name": "visit-abc"},
        "id": "EV_1",
        "createdAt": str(int(NOW.timestamp()) - 5),
    } | extra
    return json.dumps(data).encode()


def signed(
    body: bytes,
    *,
    secret: str = SECRET,
    iss: str = API_KEY,
    valid_for: timedelta = timedelta(minutes=5),
    **overrides: Any,
) -> dict[str, str]:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token_claims: dict[str, Any] = {
        "iss": iss,
        "nbf": int(NOW.timestamp()) - 10,
        "exp": int((NOW + valid_for).timestamp()),
        "sha256": digest,
    } | overrides
    token_claims = {k: v for k, v in token_claims.items() if v is not None}
    return {
        "Authorization": sign(token_claims, secret),
        "Content-Type": "application/webhook+json",
    }


PARTICIPANT = {"sid": "PA_1", "identity": "Patient/1", "name": "Pat Doe", "state": "ACTIVE"}


def test_webhook_participant_joined(provider: LiveKitProvider) -> None:
    body = event("participant_joined", participant=PARTICIPANT)
    [got] = provider.parse_webhook(signed(body), body)
    assert got.kind == "participant-joined" and got.room_id == "visit-abc"
    assert got.participant_identity == "Patient/1" and got.participant_display == "Pat Doe"
    assert got.participant_sid == "PA_1" and got.event_id == "EV_1"
    assert got.at == NOW - timedelta(seconds=5) and got.provider == "livekit"


def test_webhook_participant_left_and_room_finished(provider: LiveKitProvider) -> None:
    body = event("participant_left", participant=PARTICIPANT, createdAt=int(NOW.timestamp()))
    [left] = provider.parse_webhook(signed(body), body)
    assert left.kind == "participant-left" and left.at == NOW
    body = event("room_finished")
    [ended] = provider.parse_webhook(signed(body), body)
    assert ended.kind == "room-ended" and ended.participant_identity is None


def test_webhook_accepts_a_bearer_prefix_and_lowercase_header(provider: LiveKitProvider) -> None:
    body = event("room_finished")
    token = signed(body)["Authorization"]
    assert len(provider.parse_webhook({"authorization": f"Bearer {token}"}, body)) == 1


def test_webhook_events_we_do_not_track_are_verified_then_ignored(
    provider: LiveKitProvider,
) -> None:
    body = event("track_published", participant=PARTICIPANT)
    assert provider.parse_webhook(signed(body), body) == []
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(b"{}", secret="forged-secret-0123456789abcdef0"), body)


def test_webhook_forged_signature_is_rejected(provider: LiveKitProvider) -> None:
    body = event("participant_joined", participant=PARTICIPANT)
    with pytest.raises(WebhookRejected, match="signature"):
        provider.parse_webhook(signed(body, secret="forged-secret-0123456789abcdef0"), body)


def test_webhook_body_altered_after_signing_is_rejected(provider: LiveKitProvider) -> None:
    body = event("participant_joined", participant=PARTICIPANT)
    headers = signed(body)
    altered = body.replace(b"Patient/1", b"Patient/2")
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.parse_webhook(headers, altered)


def test_webhook_without_authorization_is_rejected(provider: LiveKitProvider) -> None:
    body = event("room_finished")
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({"Content-Type": "application/webhook+json"}, body)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({"Authorization": "Bearer "}, body)


def test_webhook_with_an_expired_token_is_rejected(provider: LiveKitProvider) -> None:
    body = event("room_finished")
    with pytest.raises(WebhookRejected, match="expired"):
        provider.parse_webhook(signed(body, valid_for=timedelta(minutes=-2)), body)


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "someone-else"},
        {"sha256": None},
        {"sha256": "not base64!"},
        {"exp": None},
        {"nbf": int((NOW + timedelta(hours=1)).timestamp())},
    ],
)
def test_webhook_tokens_missing_what_livekit_signs_are_rejected(
    provider: LiveKitProvider, overrides: dict[str, Any]
) -> None:
    body = event("room_finished")
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(signed(body, **overrides), body)


def test_webhook_unsigned_alg_none_is_rejected(provider: LiveKitProvider) -> None:
    body = event("room_finished")
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    payload = {"iss": API_KEY, "exp": int(NOW.timestamp()) + 60, "sha256": digest}
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."
    with pytest.raises(WebhookRejected):
        provider.parse_webhook({"Authorization": token}, body)


def test_webhook_signed_body_that_is_not_an_event_is_rejected(provider: LiveKitProvider) -> None:
    for body in (b"not json", b"[1, 2]", event("participant_joined")):
        with pytest.raises(WebhookRejected):
            provider.parse_webhook(signed(body), body)


# -- secrets ------------------------------------------------------------------------------


async def test_no_secret_in_reprs_or_error_messages(fake: FakeLiveKit) -> None:
    provider = make(fake)
    config = provider.config
    texts = [repr(config), str(config)]
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None and issued.token not in repr(issued)
    texts.append(repr(issued))

    def echo(request: httpx.Request) -> httpx.Response:
        # A provider that echoes our credentials back in its error message.
        sent = request.headers["Authorization"]
        return twirp(400, "invalid_argument", f"bad request {sent} {SECRET} key {API_KEY}")

    echoing = LiveKitProvider(config, http=client(echo), clock=clock)
    for call in (echoing.create_room("appt-1"), echoing.close_room(room)):
        with pytest.raises(ProviderError) as caught:
            await call
        texts += [str(caught.value), repr(caught.value), caught.value.issues[0].diagnostics]
        assert "***" in str(caught.value)
    body = event("room_finished")
    for headers in (signed(body, secret="wrong-secret-0123456789abcdef00"), {}):
        with pytest.raises(WebhookRejected) as rejected:
            provider.parse_webhook(headers, body)
        texts.append(str(rejected.value))
    assert_no_secrets(texts, [SECRET, API_KEY, issued.token])
    assert "api_secret" not in repr(config) and "livekit.example.org" in repr(config)


def test_config_refuses_missing_credentials_without_echoing_them() -> None:
    with pytest.raises(ValueError) as caught:
        LiveKitConfig(url=URL, api_key=API_KEY, api_secret="")
    assert "api_secret" in str(caught.value)
    with pytest.raises(ValueError):
        LiveKitConfig(url="ftp://x", api_key=API_KEY, api_secret=SECRET)


def test_urls_derive_from_either_scheme() -> None:
    config = LiveKitConfig(url="wss://lk.example.org/", api_key=API_KEY, api_secret=SECRET)
    assert config.api_url == "https://lk.example.org" and config.ws_url == "wss://lk.example.org"
    config = LiveKitConfig(url="http://localhost:7880", api_key=API_KEY, api_secret=SECRET)
    assert config.api_url == "http://localhost:7880" and config.ws_url == "ws://localhost:7880"


async def test_aclose_leaves_an_injected_client_open(fake: FakeLiveKit) -> None:
    http = client(fake)
    provider = LiveKitProvider(
        LiveKitConfig(url=URL, api_key=API_KEY, api_secret=SECRET), http=http, clock=clock
    )
    await provider.aclose()
    assert not http.is_closed
    owned = LiveKitProvider(LiveKitConfig(url=URL, api_key=API_KEY, api_secret=SECRET))
    await owned.aclose()
    assert owned._http.is_closed
    await http.aclose()


async def test_room_from_its_name_needs_no_call(
    fake: FakeLiveKit, provider: LiveKitProvider
) -> None:
    room = await provider.create_room("appt-1")
    calls = len(fake.calls)
    again = await make(fake).room(room.room_id)
    assert (again.room_id, again.name, again.join_url) == (room.room_id, room.name, room.join_url)
    assert len(fake.calls) == calls
