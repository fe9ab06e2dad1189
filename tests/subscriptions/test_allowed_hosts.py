"""Where notifications may go (issue 15 "Safety": FHIRSERVER_SUBSCRIPTION_ALLOWED_HOSTS,
checked on create and on every delivery after DNS resolution; http(s) only)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.clock import MovableClock
from tests.conftest import FHIR_JSON
from tests.subscriptions.conftest import START, criteria_subscription
from tests.subscriptions.receiver import Receiver, serving


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as running:
        yield running


async def _run(settings: Settings, backend: Backend, receiver: Receiver, endpoint: str) -> int:
    """Create a subscription to `endpoint` and a matching write; the create's status."""
    clock = MovableClock()
    clock.move_to(START)
    app = create_app(settings, store=backend.store, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON},
        ) as http:
            sub = criteria_subscription(endpoint, "Patient?family=smith")
            created = await http.post("/Subscription", json=sub)
            if created.status_code != 201:
                return created.status_code
            await http.post(
                "/Patient", json={"resourceType": "Patient", "name": [{"family": "smith"}]}
            )
            for _ in range(3):
                await app.state.jobs.run_due()
            return 201


async def test_a_listed_address_receives(
    settings: Settings, test_backend: Backend, receiver: Receiver
) -> None:
    allowed = dataclasses.replace(
        settings, subscription_allowed_hosts="hooks.example.org, 127.0.0.1"
    )
    assert await _run(allowed, test_backend, receiver, receiver.url) == 201
    assert len(receiver.received) == 1


async def test_an_unlisted_host_is_refused_on_create(
    settings: Settings, test_backend: Backend, receiver: Receiver
) -> None:
    allowed = dataclasses.replace(settings, subscription_allowed_hosts="hooks.example.org")
    assert await _run(allowed, test_backend, receiver, receiver.url) == 422
    assert receiver.received == []


async def test_a_name_resolving_outside_the_listed_networks_gets_nothing(
    settings: Settings, test_backend: Backend, receiver: Receiver
) -> None:
    # `localhost` might resolve into 10/8 when it is written; at delivery it resolves
    # to loopback, which the list does not allow.
    allowed = dataclasses.replace(settings, subscription_allowed_hosts="10.0.0.0/8")
    endpoint = receiver.url.replace("127.0.0.1", "localhost")
    assert await _run(allowed, test_backend, receiver, endpoint) == 201
    assert receiver.received == [] and receiver.refused == 0
    # The same name, its network listed: delivered.
    allowed = dataclasses.replace(settings, subscription_allowed_hosts="127.0.0.0/8, ::1")
    assert await _run(allowed, test_backend, receiver, endpoint) == 201
    assert len(receiver.received) >= 1
