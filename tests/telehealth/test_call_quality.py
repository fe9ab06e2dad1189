"""Call quality as Observations (issue 19 point 6; R4 observation.html; README
"Recordings and call quality"): the network quality Daily reports in a participant event
becomes an Observation on the visit's Encounter, coded in
extensions/CodeSystem-call-quality.json, written once however often the event is
delivered; an event without a quality writes none."""

from __future__ import annotations

import time
from typing import Any

import httpx
from starlette.applications import Starlette

from tests.telehealth import daily_app
from tests.telehealth.daily_app import deliver, started_visit
from tests.telehealth.helpers import search
from tests.telehealth.providers import test_daily

# The app on Daily: these fixtures replace conftest.py's LiveKit ones in this module.
fake_daily = daily_app.fake_daily
provider = daily_app.provider
telehealth_settings = daily_app.telehealth_settings

SYSTEM = "http://fhirserver.dev/fhir/CodeSystem/call-quality"


def joined(room: str, event_id: str, **data: Any) -> bytes:
    participant = test_daily.PARTICIPANT | {"room": room, "joined_at": int(time.time()) - 5}
    return test_daily.hook("participant.joined", event_id, **participant | data)


async def observations(http: httpx.AsyncClient, encounter_id: str) -> list[dict[str, Any]]:
    query = f"Observation?encounter=Encounter/{encounter_id}&code={SYSTEM}|network-quality"
    return await search(http, query)


async def test_a_reported_network_quality_is_an_observation_on_the_encounter(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, started = await started_visit(http, app)
    encounter = started["encounter"]
    body = joined(room, "ptcpt-join-1", networkQualityState="warning")
    assert (await deliver(http, body)).json() == {"recorded": 1}
    assert (await deliver(http, body)).json() == {"recorded": 0}  # repeated: once
    [observation] = await observations(http, encounter["id"])
    assert observation["status"] == "final"
    assert observation["valueCodeableConcept"]["coding"] == [
        {"system": SYSTEM, "code": "warning", "display": "Warning"}
    ]
    assert observation["subject"] == {"reference": "Patient/p1"}
    assert observation["focus"] == [{"reference": "Practitioner/d1", "display": "Dr Who"}]
    assert observation["effectiveDateTime"] <= observation["meta"]["lastUpdated"]


async def test_an_event_without_a_quality_writes_no_observation(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    room, started = await started_visit(http, app)
    body = joined(room, "ptcpt-join-1", networkQualityState="unknown")
    assert (await deliver(http, body)).json() == {"recorded": 1}
    assert await observations(http, started["encounter"]["id"]) == []
    assert await search(http, "Observation") == []
