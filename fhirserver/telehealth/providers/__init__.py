"""Video providers behind one protocol: rooms, participant tokens, webhooks."""

from fhirserver.telehealth.providers.base import (
    NETWORK_QUALITIES,
    EventKind,
    NetworkQuality,
    ParticipantRole,
    ParticipantToken,
    ProviderError,
    ProviderUnavailable,
    Recording,
    RecordingDeletion,
    Room,
    RoomEvent,
    VideoProvider,
    VideoProviderError,
    WebhookChallenges,
    WebhookRejected,
)
from fhirserver.telehealth.providers.daily import DailyConfig, DailyProvider
from fhirserver.telehealth.providers.hms import HmsConfig, HmsProvider
from fhirserver.telehealth.providers.jitsi import JitsiConfig, JitsiProvider
from fhirserver.telehealth.providers.livekit import LiveKitConfig, LiveKitProvider
from fhirserver.telehealth.providers.zoom import ZoomConfig, ZoomProvider

__all__ = [
    "NETWORK_QUALITIES",
    "DailyConfig",
    "DailyProvider",
    "EventKind",
    "HmsConfig",
    "HmsProvider",
    "JitsiConfig",
    "JitsiProvider",
    "LiveKitConfig",
    "LiveKitProvider",
    "NetworkQuality",
    "ParticipantRole",
    "ParticipantToken",
    "ProviderError",
    "ProviderUnavailable",
    "Recording",
    "RecordingDeletion",
    "Room",
    "RoomEvent",
    "VideoProvider",
    "VideoProviderError",
    "WebhookChallenges",
    "WebhookRejected",
    "ZoomConfig",
    "ZoomProvider",
]
