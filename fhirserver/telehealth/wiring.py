"""Wiring from settings: the video provider `FHIRSERVER_VIDEO_PROVIDER` names with its
FHIRSERVER_* credentials, and the visit settings (README "Telehealth")."""

from __future__ import annotations

from datetime import timedelta

import httpx

from fhirserver.clock import Clock, system_clock
from fhirserver.config import Settings
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.telehealth.context import VisitContext, VisitSettings
from fhirserver.telehealth.providers import (
    DailyConfig,
    DailyProvider,
    HmsConfig,
    HmsProvider,
    JitsiConfig,
    JitsiProvider,
    LiveKitConfig,
    LiveKitProvider,
    VideoProvider,
    ZoomConfig,
    ZoomProvider,
)

_PREFIXES = {
    "jitsi": "JITSI",
    "livekit": "LIVEKIT",
    "100ms": "HMS",
    "zoom-video-sdk": "ZOOM",
    "daily": "DAILY",
}


def make_provider(
    settings: Settings, http: httpx.AsyncClient | None = None, clock: Clock = system_clock
) -> VideoProvider:
    """The configured provider; `http` replaces its HTTP client (tests: a mock transport).
    Raises ValueError naming the settings to look at."""
    try:
        return _provider(settings, http, clock)
    except ValueError as exc:
        prefix = _PREFIXES[settings.video_provider]
        raise ValueError(
            f"{exc} (set FHIRSERVER_{prefix}_* or change FHIRSERVER_VIDEO_PROVIDER)"
        ) from None


def _provider(settings: Settings, http: httpx.AsyncClient | None, clock: Clock) -> VideoProvider:
    if settings.video_provider == "livekit":
        livekit = LiveKitConfig(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
        )
        return LiveKitProvider(livekit, http=http, clock=clock)
    if settings.video_provider == "100ms":
        webhook_url = f"{settings.origin}/telehealth/webhooks/100ms"
        hms = HmsConfig(
            access_key=settings.hms_access_key,
            app_secret=settings.hms_app_secret,
            prebuilt_domain=settings.hms_prebuilt_domain,
            template_id=settings.hms_template_id or None,
            webhook_secret=settings.hms_webhook_secret or None,
            webhook_url=webhook_url if settings.hms_webhook_secret else None,
        )
        return HmsProvider(hms, http=http, clock=clock)
    if settings.video_provider == "zoom-video-sdk":
        zoom = ZoomConfig(
            sdk_key=settings.zoom_sdk_key,
            sdk_secret=settings.zoom_sdk_secret,
            join_page=settings.zoom_join_page,
            api_key=settings.zoom_api_key or None,
            api_secret=settings.zoom_api_secret or None,
            webhook_secret=settings.zoom_webhook_secret or None,
        )
        return ZoomProvider(zoom, http=http, clock=clock)
    if settings.video_provider == "daily":
        daily = DailyConfig(
            api_key=settings.daily_api_key,
            domain=settings.daily_domain,
            domain_id=settings.daily_domain_id,
            webhook_hmac=settings.daily_webhook_hmac or None,
            room_ttl=timedelta(days=settings.daily_room_days),
        )
        return DailyProvider(daily, http=http, clock=clock)
    jitsi = JitsiConfig(
        domain=settings.jitsi_domain,
        app_id=settings.jitsi_app_id or None,
        app_secret=settings.jitsi_app_secret or None,
        webhook_secret=settings.jitsi_webhook_secret or None,
    )
    return JitsiProvider(jitsi, clock=clock)


def make_visit_context(
    settings: Settings, store: Store, provider: VideoProvider, writes: WriteContext
) -> VisitContext:
    visit_settings = VisitSettings(
        no_show_grace=timedelta(minutes=settings.no_show_grace_minutes),
        join_early=timedelta(minutes=settings.join_early_minutes),
        token_ttl=timedelta(minutes=settings.join_token_minutes),
        require_consent=settings.require_consent,
        join_base=f"{settings.origin}/join",
    )
    return VisitContext(store, provider, writes, visit_settings)
