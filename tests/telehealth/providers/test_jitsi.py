"""Jitsi provider tests: JWT mode and the no-account mode.

Tokens follow lib-jitsi-meet doc/tokens.md, "Token structure" (iss = application id, room,
exp, sub = tenant or domain, aud = application identifier), "Token Identifiers"
(context.user id / name) and "Jitsi-meet options" (`https://<domain>/<room>?jwt=<token>`);
the moderator claims follow the token-moderation plugins described in the jitsi module.
Webhooks follow jitsi-contrib prosody-plugins event_sync/README.md, "Events"
(muc-occupant-joined / muc-occupant-left / muc-room-destroyed payloads) and "Optional
config" (static `api_headers`, here `Authorization: Bearer <secret>`). Jitsi rooms need
no API call, so there is no HTTP fake here.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from fhirserver.telehealth.providers import (
    JitsiConfig,
    JitsiProvider,
    Room,
    VideoProvider,
    WebhookRejected,
)
from tests.telehealth.providers.helpers import NOW, assert_no_secrets, claims, clock

APP_ID = "fhirserver"
SECRET = "jitsi-app-secret-0123456789abcdef"
HOOK_SECRET = "event-sync-secret-0123456789"
DOMAIN = "meet.example.org"


def jwt_mode(**config: Any) -> JitsiProvider:
    settings: dict[str, Any] = {
        "domain": DOMAIN,
        "app_id": APP_ID,
        "app_secret": SECRET,
        "webhook_secret": HOOK_SECRET,
    } | config
    return JitsiProvider(JitsiConfig(**settings), clock=clock)


@pytest.fixture
def provider() -> JitsiProvider:
    return jwt_mode()


def test_is_a_video_provider(provider: JitsiProvider) -> None:
    assert isinstance(provider, VideoProvider) and provider.name == "jitsi"
    assert isinstance(JitsiProvider(JitsiConfig()), VideoProvider)


# -- rooms -------------------------------------------------------------------------------


async def test_room_names_are_stable_per_key_and_unguessable(provider: JitsiProvider) -> None:
    room = await provider.create_room("appt-1")
    assert room == await provider.create_room("appt-1")
    assert room == await jwt_mode().create_room("appt-1")  # after a restart: same name
    assert room.provider == "jitsi" and room.room_id == room.name
    assert room.join_url == f"https://{DOMAIN}/{room.name}"
    suffix = room.name.removeprefix("visit-")
    assert room.name.startswith("visit-") and len(suffix) == 26  # base32 of 128 bits
    assert suffix == suffix.lower() and "appt" not in suffix
    assert (await provider.create_room("appt-2")).name != room.name
    # Another secret, another name: knowing the key is not enough to find the room.
    other = jwt_mode(app_secret="another-secret-0123456789abcdef")
    assert (await other.create_room("appt-1")).name != room.name
    assert (await jwt_mode(room_secret="r" * 32).create_room("appt-1")).name != room.name


async def test_close_room_is_a_no_op_and_idempotent(provider: JitsiProvider) -> None:
    room = await provider.create_room("appt-1")
    assert await provider.close_room(room) is None
    assert await provider.close_room(room) is None
    never = Room("jitsi", "visit-never", "visit-never", f"https://{DOMAIN}/visit-never")
    assert await provider.close_room(never) is None


# -- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["host", "guest"])
async def test_token_claims(provider: JitsiProvider, role: str) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(
        room, "Practitioner/7", "Dr Who", role, timedelta(minutes=30)
    )  # type: ignore[arg-type]
    assert issued.token is not None
    got = claims(issued.token, SECRET)
    host = role == "host"
    assert got["aud"] == "jitsi" and got["iss"] == APP_ID and got["sub"] == DOMAIN
    assert got["room"] == room.name
    assert got["nbf"] == int(NOW.timestamp())
    assert got["exp"] == int((NOW + timedelta(minutes=30)).timestamp())
    assert got["context"]["user"] == {
        "id": "Practitioner/7",
        "name": "Dr Who",
        "moderator": host,
        "affiliation": "owner" if host else "member",
    }
    assert got["moderator"] is host
    assert issued.role == role and issued.expires_at == NOW + timedelta(minutes=30)
    assert issued.join_url == f"https://{DOMAIN}/{room.name}?jwt={issued.token}"


async def test_tenant_goes_into_sub_and_url() -> None:
    provider = jwt_mode(tenant="Clinic", audience="fhirserver")
    room = await provider.create_room("appt-1")
    assert room.join_url == f"https://{DOMAIN}/clinic/{room.name}"
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None
    got = claims(issued.token, SECRET)
    assert got["sub"] == "clinic" and got["aud"] == "fhirserver"


async def test_token_is_signed_with_the_app_secret(provider: JitsiProvider) -> None:
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    assert issued.token is not None
    with pytest.raises(Exception):  # noqa: B017 - joserfc's BadSignatureError
        claims(issued.token, "not-the-jitsi-secret-0123456789ab")


async def test_token_arguments_are_checked(provider: JitsiProvider) -> None:
    room = await provider.create_room("appt-1")
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "owner", timedelta(minutes=5))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(seconds=-1))
    with pytest.raises(ValueError):
        provider.participant_token(room, " ", "Pat", "guest", timedelta(minutes=5))


# -- no-account mode ----------------------------------------------------------------------


async def test_no_account_mode_has_public_urls_and_no_tokens() -> None:
    provider = JitsiProvider(JitsiConfig(room_secret="persisted-room-secret-0123456789"))
    assert provider.no_account and provider.config.domain == "meet.jit.si"
    room = await provider.create_room("appt-1")
    assert room.join_url == f"https://meet.jit.si/{room.name}"
    issued = provider.participant_token(
        room, "Patient/1", 'Pat "P" Doe', "host", timedelta(minutes=5)
    )
    assert issued.token is None and issued.expires_at is None and issued.role == "host"
    url, _, fragment = issued.join_url.partition("#")
    assert url == room.join_url and "jwt" not in url
    assert fragment.startswith("userInfo.displayName=")
    assert json.loads(unquote(fragment.partition("=")[2])) == 'Pat "P" Doe'


async def test_no_account_room_names_need_a_persisted_secret_to_survive_restarts() -> None:
    persisted = JitsiConfig(room_secret="persisted-room-secret-0123456789")
    one = await JitsiProvider(persisted).create_room("appt-1")
    assert one == await JitsiProvider(persisted).create_room("appt-1")
    # Without one, each process draws its own random secret: unguessable, not stable.
    a = await JitsiProvider(JitsiConfig()).create_room("appt-1")
    b = await JitsiProvider(JitsiConfig()).create_room("appt-1")
    assert a.name != b.name and len(a.name.removeprefix("visit-")) == 26


def test_no_account_mode_has_no_webhooks() -> None:
    provider = JitsiProvider(JitsiConfig(webhook_secret=None))
    with pytest.raises(WebhookRejected, match="no built-in webhooks"):
        provider.parse_webhook({"Authorization": "Bearer x"}, b"{}")


def test_config_needs_both_app_id_and_secret() -> None:
    with pytest.raises(ValueError):
        JitsiConfig(app_id=APP_ID)
    with pytest.raises(ValueError):
        JitsiConfig(app_secret=SECRET)
    with pytest.raises(ValueError):
        JitsiConfig(room_prefix="Visit/")


# -- webhooks (event_sync) ---------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {HOOK_SECRET}", "Content-Type": "application/json"}
OCCUPANT = {
    "name": "Pat Doe",
    "id": "Patient/1",
    "occupant_jid": "14f01c40@meet.example.org/OWhl8jSh",
    "joined_at": int(NOW.timestamp()) - 60,
}


def sync_event(name: str, **extra: Any) -> bytes:
    data = {
        "event_name": name,
        "room_name": "visit-abc",
        "room_jid": "visit-abc@conference.meet.example.org",
        "is_breakout": False,
    } | extra
    return json.dumps(data).encode()


def test_webhook_occupant_joined_and_left(provider: JitsiProvider) -> None:
    body = sync_event("muc-occupant-joined", active_occupants_count=1, occupant=OCCUPANT)
    [joined] = provider.parse_webhook(AUTH, body)
    assert joined.kind == "participant-joined" and joined.room_id == "visit-abc"
    assert joined.participant_identity == "Patient/1" and joined.participant_display == "Pat Doe"
    assert joined.at == NOW - timedelta(minutes=1)
    left_occupant = OCCUPANT | {"left_at": int(NOW.timestamp())}
    [left] = provider.parse_webhook(AUTH, sync_event("muc-occupant-left", occupant=left_occupant))
    assert left.kind == "participant-left" and left.at == NOW
    assert left.participant_sid == joined.participant_sid == OCCUPANT["occupant_jid"]


def test_webhook_room_destroyed_and_tenant_room_names(provider: JitsiProvider) -> None:
    body = sync_event(
        "muc-room-destroyed", room_name="[clinic]visit-abc", destroyed_at=int(NOW.timestamp())
    )
    [ended] = provider.parse_webhook({"authorization": AUTH["Authorization"]}, body)
    assert ended.kind == "room-ended" and ended.room_id == "visit-abc" and ended.at == NOW


def test_webhook_breakout_and_untracked_events_are_ignored(provider: JitsiProvider) -> None:
    breakout = sync_event("muc-occupant-joined", is_breakout=True, occupant=OCCUPANT)
    assert provider.parse_webhook(AUTH, breakout) == []
    assert provider.parse_webhook(AUTH, sync_event("muc-room-created")) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": HOOK_SECRET},
        {"Authorization": "Bearer wrong-secret-0123456789"},
        {"Authorization": f"Bearer {HOOK_SECRET}x"},
        {"X-Webhook-Secret": HOOK_SECRET},
    ],
)
def test_webhook_with_a_missing_or_wrong_secret_is_rejected(
    provider: JitsiProvider, headers: dict[str, str]
) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(headers, sync_event("muc-room-destroyed"))


@pytest.mark.parametrize(
    "body",
    [
        b"<xml/>",
        b"[]",
        sync_event("muc-occupant-joined"),
        sync_event("muc-room-destroyed", room_name=""),
    ],
)
def test_webhook_bad_body_is_rejected(provider: JitsiProvider, body: bytes) -> None:
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(AUTH, body)


def test_no_webhook_secret_configured_rejects_everything() -> None:
    provider = jwt_mode(webhook_secret=None)
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(AUTH, sync_event("muc-room-destroyed"))


# -- secrets ------------------------------------------------------------------------------


async def test_no_secret_in_reprs_or_error_messages(provider: JitsiProvider) -> None:
    room_secret = "persisted-room-secret-0123456789"
    config = JitsiConfig(
        domain=DOMAIN,
        app_id=APP_ID,
        app_secret=SECRET,
        room_secret=room_secret,
        webhook_secret=HOOK_SECRET,
    )
    room = await provider.create_room("appt-1")
    issued = provider.participant_token(room, "Patient/1", "Pat", "guest", timedelta(minutes=5))
    texts = [repr(config), str(config), repr(room), repr(issued)]
    for headers in ({}, {"Authorization": "Bearer guess"}):
        with pytest.raises(WebhookRejected) as caught:
            provider.parse_webhook(headers, b"{}")
        texts.append(str(caught.value))
    with pytest.raises(ValueError) as bad:
        JitsiConfig(app_secret=SECRET)
    texts.append(str(bad.value))
    assert issued.token is not None
    assert_no_secrets(texts, [SECRET, HOOK_SECRET, room_secret, issued.token])
    assert APP_ID in repr(config)


async def test_room_from_its_name_is_the_same_room() -> None:
    # No-account mode: a random secret per process, so the stored name is what finds it.
    first = await JitsiProvider(JitsiConfig()).create_room("appt-1")
    again = await JitsiProvider(JitsiConfig()).room(first.room_id)
    assert again == first
