"""What the subscription engine needs, built once by the app from its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from fhirserver.clock import Clock
from fhirserver.config import Settings
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.subscriptions.endpoints import AllowedHosts, Resolver, system_resolver
from fhirserver.subscriptions.topics import Topic
from fhirserver.subscriptions.transport import DeliveryTransport


@dataclass(frozen=True)
class SubscriptionSettings:
    allowed: AllowedHosts = field(default_factory=lambda: AllowedHosts.parse("*"))
    # How long a failing delivery (or handshake) is retried before the status is `error`.
    retry_window: timedelta = timedelta(hours=24)
    # Every delivery's connect/read/write timeout.
    timeout_seconds: float = 10.0
    # How long recorded events are kept for delivery, `$events` and websocket replay.
    retention: timedelta = timedelta(days=7)

    @classmethod
    def from_settings(cls, settings: Settings) -> SubscriptionSettings:
        window = timedelta(hours=settings.subscription_retry_hours)
        return cls(
            allowed=AllowedHosts.parse(settings.subscription_allowed_hosts),
            retry_window=window,
            timeout_seconds=float(settings.subscription_timeout_seconds),
            retention=max(timedelta(days=7), 2 * window),
        )


@dataclass(frozen=True)
class SubscriptionContext:
    store: Store
    settings: SubscriptionSettings
    # Topics by canonical URL.
    topics: Mapping[str, Topic]
    # Writes the server makes on its own account (status changes).
    writes: WriteContext
    clock: Clock
    http: httpx.AsyncClient
    # The FHIR base URL, for notification bundles' fullUrls.
    base_url: str


def delivery_client(
    settings: SubscriptionSettings, resolve: Resolver = system_resolver
) -> httpx.AsyncClient:
    """Connections only to the allowed hosts' checked addresses (transport.py), names
    resolved by `resolve`; redirects never followed (an allowed endpoint cannot send
    us elsewhere)."""
    return httpx.AsyncClient(
        transport=DeliveryTransport(settings.allowed, resolve),
        follow_redirects=False,
        timeout=httpx.Timeout(settings.timeout_seconds),
    )
