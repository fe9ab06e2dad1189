"""Fixtures of the subscription tests: the app on every backend with a movable clock
and a test topic, a real notification receiver on a loopback port, and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.search.parse import parse_search
from fhirserver.subscriptions.topics import FilterBy, Topic, Trigger
from fhirserver.worker import JobRunner
from tests.backends import BACKENDS, Backend
from tests.clock import MovableClock
from tests.conftest import FHIR_JSON
from tests.subscriptions.receiver import Receiver, serving

ENCOUNTER_TOPIC = "http://example.org/fhir/SubscriptionTopic/encounter-started"
# In the future: MongoDB (and mongomock) purge expired records by the real time.
START = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def encounter_topic() -> Topic:
    """Encounters that become in-progress (created so, or updated to it)."""
    in_progress = parse_search(("Encounter",), [("status", "in-progress")], strict=True)
    trigger = Trigger(
        "Encounter",
        frozenset({"create", "update"}),
        previous=parse_search(("Encounter",), [("status:not", "in-progress")], strict=True),
        current=in_progress,
        result_for_create=True,
        require_both=True,
    )
    # canFilterBy: who the encounter is for.
    filters = (FilterBy("Encounter", "patient"), FilterBy("Encounter", "subject"))
    return Topic(ENCOUNTER_TOPIC, "Encounter started", (trigger,), filters)


@dataclass
class Harness:
    app: Starlette
    http: httpx.AsyncClient
    clock: MovableClock
    receiver: Receiver

    @property
    def jobs(self) -> JobRunner:
        runner: JobRunner = self.app.state.jobs
        return runner

    async def run_jobs(self, rounds: int = 3) -> None:
        """Run what is due now a few times (the matcher re-schedules itself 1 s on)."""
        for _ in range(rounds):
            await self.jobs.run_due()
            self.clock.move_to(self.clock() + timedelta(seconds=2))

    async def later(self, delta: timedelta) -> None:
        self.clock.move_to(self.clock() + delta)
        await self.run_jobs()

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(f"/{resource['resourceType']}", json=resource)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def read(self, path: str) -> dict[str, Any]:
        response = await self.http.get(path)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


@pytest.fixture
def clock() -> MovableClock:
    moving = MovableClock()
    moving.move_to(START)
    return moving


@pytest.fixture
async def harness(
    settings: Settings, test_backend: Backend, clock: MovableClock
) -> AsyncIterator[Harness]:
    topics = {ENCOUNTER_TOPIC: encounter_topic()}
    app = create_app(settings, store=test_backend.store, clock=clock, topics=topics)
    async with serving(Receiver()) as receiver, app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as http:
            yield Harness(app, http, clock, receiver)


def criteria_subscription(endpoint: str, criteria: str, **channel: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, **channel},
    }


def topic_subscription(
    endpoint: str, *, filters: tuple[str, ...] = (), content: str = "id-only", **extensions: int
) -> dict[str, Any]:
    backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": backport + "backport-payload-content", "valueCode": content}]
        },
    }
    names = {"heartbeat": "backport-heartbeat-period", "max_count": "backport-max-count"}
    kinds = {"heartbeat": "valueUnsignedInt", "max_count": "valuePositiveInt"}
    ext = [{"url": backport + names[k], kinds[k]: v} for k, v in extensions.items()]
    if ext:
        channel["extension"] = ext
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [backport + "backport-subscription"]},
        "status": "requested",
        "reason": "test",
        "criteria": ENCOUNTER_TOPIC,
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {
            "extension": [
                {"url": backport + "backport-filter-criteria", "valueString": f} for f in filters
            ]
        }
    return resource
