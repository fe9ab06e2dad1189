"""The app on Daily (a fake Daily REST API: tests/telehealth/providers/test_daily.py),
for the suites about what Daily reports: recordings and call quality. Import the
fixtures into a test module to run it on Daily instead of LiveKit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.config import Settings
from fhirserver.telehealth.providers import VideoProvider
from fhirserver.telehealth.virtual_service import virtual_service
from tests.telehealth.helpers import book, outputs, start
from tests.telehealth.providers import test_daily


@pytest.fixture
def fake_daily() -> test_daily.FakeDaily:
    return test_daily.FakeDaily()


@pytest.fixture
def provider(fake_daily: test_daily.FakeDaily) -> VideoProvider:
    return test_daily.make(fake_daily)


@pytest.fixture
def telehealth_settings(settings: Settings) -> Settings:
    return settings.with_overrides(video_provider="daily")


async def started_visit(http: httpx.AsyncClient, app: Starlette) -> tuple[str, dict[str, Any]]:
    """A started visit: its room and the $start-virtual-visit outputs."""
    booked = await book(http, app, channel="daily")
    answer = await start(http, booked["id"])
    assert answer.status_code == 200, answer.text
    room = virtual_service(booked).session_key  # type: ignore[union-attr]
    assert room is not None
    return room, outputs(answer.json())


async def deliver(http: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await http.post(
        "/telehealth/webhooks/daily", content=body, headers=test_daily.signed(body)
    )
