"""A provider's webhook endpoint challenge over HTTP (Zoom's endpoint.url_validation):
answered when signed with the webhook secret, 401 and no answer when not, and nothing
recorded either way. Providers without challenges never see one."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.config import Settings
from fhirserver.telehealth.providers import VideoProvider, ZoomProvider
from tests.telehealth.helpers import search
from tests.telehealth.providers.test_zoom import HOOK_SECRET, FakeZoom, signed
from tests.telehealth.providers.test_zoom import make as make_zoom

HOOK = "/telehealth/webhooks/zoom-video-sdk"
CHALLENGE = json.dumps(
    {"payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event": "endpoint.url_validation"}
).encode()


@pytest.fixture
def provider() -> VideoProvider:
    return make_zoom(FakeZoom())


@pytest.fixture
def telehealth_settings(settings: Settings) -> Settings:
    return settings.with_overrides(video_provider="zoom-video-sdk")


async def test_a_signed_challenge_is_answered(
    http: httpx.AsyncClient, app: Starlette, provider: ZoomProvider
) -> None:
    answer = await http.post(HOOK, content=CHALLENGE, headers=signed(CHALLENGE))
    assert answer.status_code == 200, answer.text
    digest = hmac.new(HOOK_SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256)
    assert answer.json() == {
        "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
        "encryptedToken": digest.hexdigest(),
    }
    assert await search(http, "AuditEvent") == []


async def test_a_forged_challenge_gets_401_and_no_answer(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    forged = signed(CHALLENGE, secret="guessed-secret-token-0123456789")
    answer = await http.post(HOOK, content=CHALLENGE, headers=forged)
    assert answer.status_code == 401
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert "encryptedToken" not in answer.text
    assert await search(http, "AuditEvent") == []


async def test_an_ordinary_delivery_is_recorded_not_answered(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    body = json.dumps(
        {
            "event": "session.user_joined",
            "payload": {
                "object": {"session_name": "v-none", "user": {"id": "1", "name": "Dr Who"}}
            },
        }
    ).encode()
    answer = await http.post(HOOK, content=body, headers=signed(body))
    assert (answer.status_code, answer.json()) == (200, {"recorded": 0})
    assert await search(http, "AuditEvent") == []
