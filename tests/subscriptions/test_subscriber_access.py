"""Notifications never show what the subscriber could not read (DESIGN.md
"Authorization": subscription delivery cannot step around the policy; issue 15
"Safety"): a subscription created under a token with a granular scope (SMART 2.2
scopes-and-launch-context.html "Finer-grained resource constraints") is notified only
of the resources that token could read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.backends import Backend
from tests.clock import MovableClock
from tests.conftest import FHIR_JSON
from tests.rest.token_apps import access, authenticator, bearer
from tests.subscriptions.conftest import START, criteria_subscription
from tests.subscriptions.receiver import Receiver, serving

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as running:
        yield running


def _observation(category: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
    }


async def test_only_what_the_subscriber_may_read_is_notified(
    settings: Settings, test_backend: Backend, receiver: Receiver
) -> None:
    tokens = {
        "lab-only": access(f"system/Observation.rs?category={LAB} system/Subscription.cruds"),
    }
    clock = MovableClock()
    clock.move_to(START)
    app = create_app(
        settings, store=test_backend.store, clock=clock, authenticator=authenticator(tokens)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON},
        ) as http:
            sub = criteria_subscription(
                receiver.url, "Observation?code=http://loinc.org|1234-5", payload=FHIR_JSON
            )
            # Whatever a client claims about the owner is replaced.
            sub["extension"] = [
                {
                    "url": "http://fhirserver.dev/fhir/StructureDefinition/subscription-owner",
                    "extension": [{"url": "scopes", "valueString": "system/*.cruds"}],
                }
            ]
            created = await http.post("/Subscription", json=sub, headers=bearer("lab-only"))
            assert created.status_code == 201, created.text
            vitals = await http.post(
                "/Observation", json=_observation("vital-signs"), headers=bearer("admin")
            )
            lab = await http.post(
                "/Observation", json=_observation("laboratory"), headers=bearer("admin")
            )
            assert vitals.status_code == lab.status_code == 201
            for _ in range(3):
                await app.state.jobs.run_due()
                clock.move_to(clock() + timedelta(seconds=2))
    assert [r.path.rsplit("/", 1)[-1] for r in receiver.received] == [lab.json()["id"]]
