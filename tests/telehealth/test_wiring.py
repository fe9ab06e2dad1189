"""The provider the settings name (README "Telehealth": configuration): Jitsi with no
account by default, LiveKit and 100ms from their FHIRSERVER_* settings, and a clear
error naming the settings when one is missing."""

from __future__ import annotations

import pytest

from fhirserver.config import Settings
from fhirserver.telehealth.providers import HmsProvider, JitsiProvider, LiveKitProvider
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


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (Settings(video_provider="livekit"), "FHIRSERVER_LIVEKIT_"),
        (Settings(video_provider="100ms"), "FHIRSERVER_HMS_"),
        (Settings(jitsi_app_id="app"), "FHIRSERVER_JITSI_"),
    ],
)
def test_a_missing_setting_is_named(settings: Settings, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make_provider(settings)
