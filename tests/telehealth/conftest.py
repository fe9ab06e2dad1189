"""The app with its telehealth parts reachable: the Starlette app (for its job runner and
visit context), an HTTP client at the server's root, and a LiveKit provider on a fake
RoomService that can be told to fail (tests/telehealth/providers/test_livekit.py).

Telehealth writes through the store protocol (units of work, jobs, searches by meeting
code and session key), so its suites run on every backend too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.telehealth.providers import LiveKitConfig, LiveKitProvider, VideoProvider
from tests.backends import BACKENDS, Backend
from tests.clock import MovableClock
from tests.telehealth.providers.helpers import client, clock
from tests.telehealth.providers.test_livekit import API_KEY, SECRET, URL, FakeLiveKit


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_livekit() -> FakeLiveKit:
    return FakeLiveKit()


@pytest.fixture
def livekit(fake_livekit: FakeLiveKit) -> LiveKitProvider:
    config = LiveKitConfig(url=URL, api_key=API_KEY, api_secret=SECRET)
    return LiveKitProvider(config, http=client(fake_livekit), clock=clock)


@pytest.fixture
def provider(livekit: LiveKitProvider) -> VideoProvider:
    """The provider the app runs with; a test module may override it."""
    return livekit


@pytest.fixture
def telehealth_settings(settings: Settings) -> Settings:
    return settings.with_overrides(video_provider="livekit")


@pytest.fixture
def app_clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def app(
    telehealth_settings: Settings,
    test_backend: Backend,
    provider: VideoProvider,
    app_clock: MovableClock,
) -> AsyncIterator[Starlette]:
    app = create_app(
        telehealth_settings, store=test_backend.store, provider=provider, clock=app_clock
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    headers: dict[str, Any] = {"Content-Type": "application/fhir+json"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers
    ) as http:
        yield http
