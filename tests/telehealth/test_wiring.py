"""The provider the settings name (README "Telehealth": configuration): Jitsi with no
account by default, LiveKit, 100ms, Zoom Video SDK and Daily from their FHIRSERVER_*
settings, and a clear error naming the settings when one is missing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fhirserver.config import Settings
from fhirserver.telehealth.providers import (
    DailyProvider,
    HmsProvider,
    JitsiProvider,
    LiveKitProvider,
    ZoomProvider,
)
from fhirserver.telehealth.wiring import make_provider


async def test_the_default_is_jitsi_without_an_account() -> None:
    provider = make_provider(Settings())
    assert isinstance(provider, JitsiProvider) and provider.no_account
    room = await provider.create_room("a1")
    assert room.join_url.startswith("https://meet.jit.si/visit-")


def test_each_provider_from_its_settings() -> None:
    livekit = Settings(
        video_provider="livekit",
        livekit_url="https://lk.example",
        livekit_api_key="k",
        livekit_api_secret="s" * 32,
    )
    assert isinstance(make_provider(livekit), LiveKitProvider)
    hms = Settings(
        video_provider="100ms",
        hms_access_key="k",
        hms_app_secret="s" * 32,
        hms_prebuilt_domain="clinic.app.100ms.live",
        hms_webhook_secret="w" * 16,
        public_url="https://fhir.example/fhir",
    )
    provider = make_provider(hms)
    assert isinstance(provider, HmsProvider)
    assert provider.config.webhook_url == "https://fhir.example/telehealth/webhooks/100ms"
    jwt = Settings(jitsi_domain="meet.example", jitsi_app_id="app", jitsi_app_secret="s" * 32)
    assert not make_provider(jwt).no_account  # type: ignore[attr-defined]


def test_zoom_and_daily_from_their_settings() -> None:
    zoom = Settings.from_env(
        {
            "FHIRSERVER_VIDEO_PROVIDER": "zoom-video-sdk",
            "FHIRSERVER_ZOOM_SDK_KEY": "sdk-key",
            "FHIRSERVER_ZOOM_SDK_SECRET": "z" * 32,
            "FHIRSERVER_ZOOM_JOIN_PAGE": "https://clinic.example/video",
            "FHIRSERVER_ZOOM_API_KEY": "api-key",
            "FHIRSERVER_ZOOM_API_SECRET": "a" * 32,
            "FHIRSERVER_ZOOM_WEBHOOK_SECRET": "w" * 24,
        }
    )
    provider = make_provider(zoom)
    assert isinstance(provider, ZoomProvider)
    assert provider.config.api_key == "api-key" and provider.config.webhook_secret == "w" * 24
    assert "z" * 32 not in repr(zoom) and "a" * 32 not in repr(zoom) and "w" * 24 not in repr(zoom)
    daily = Settings.from_env(
        {
            "FHIRSERVER_VIDEO_PROVIDER": "daily",
            "FHIRSERVER_DAILY_API_KEY": "d" * 40,
            "FHIRSERVER_DAILY_DOMAIN": "clinic",
            "FHIRSERVER_DAILY_DOMAIN_ID": "30f866c3-9123-452a-8723-ff58322d09c5",
            "FHIRSERVER_DAILY_WEBHOOK_HMAC": "aG1hYy1zZWNyZXQ=",
            "FHIRSERVER_DAILY_ROOM_DAYS": "90",
        }
    )
    provider = make_provider(daily)
    assert isinstance(provider, DailyProvider)
    assert provider.config.room_ttl == timedelta(days=90)
    assert "d" * 40 not in repr(daily) and "aG1hYy1zZWNyZXQ=" not in repr(daily)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (Settings(video_provider="livekit"), "FHIRSERVER_LIVEKIT_"),
        (Settings(video_provider="100ms"), "FHIRSERVER_HMS_"),
        (Settings(jitsi_app_id="app"), "FHIRSERVER_JITSI_"),
        (Settings(video_provider="zoom-video-sdk"), "FHIRSERVER_ZOOM_"),
        (Settings(video_provider="daily"), "FHIRSERVER_DAILY_"),
    ],
)
def test_a_missing_setting_is_named(settings: Settings, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make_provider(settings)
