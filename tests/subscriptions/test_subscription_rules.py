"""The Subscription resource's rules (R4 subscription.html: `criteria`, `status`,
`channel`, `end`; Backport IG "Subscriptions on R4": topic canonical and filters)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson

from tests.conftest import SHARED_DATA
from tests.subscriptions.conftest import (
    START,
    Harness,
    criteria_subscription,
    topic_subscription,
)


def _issue_expression(response: Any) -> str:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0].get("expression", [""])[0])


async def _count(harness: Harness) -> int:
    found = await harness.read("/Subscription?_total=accurate")
    return int(found["total"])


async def test_a_criteria_subscription_is_accepted_active(harness: Harness) -> None:
    sub = criteria_subscription(
        "http://127.0.0.1:9/hook", "Observation?code=http://loinc.org|1234-5"
    )
    created = await harness.create(sub)
    assert created["status"] == "active"
    assert (await harness.read(f"/Subscription/{created['id']}"))["status"] == "active"


async def test_criteria_the_server_cannot_search_are_refused_and_nothing_stored(
    harness: Harness,
) -> None:
    for criteria in (
        "Observation?no-such-param=1",
        "NoSuchType?code=1",
        "Observation?subject.name=peter",  # a chain: the matcher cannot follow it
        "Observation?date=notadate",
    ):
        sub = criteria_subscription("http://127.0.0.1:9/hook", criteria)
        response = await harness.http.post("/Subscription", json=sub)
        assert response.status_code in (400, 422), (criteria, response.text)
        assert _issue_expression(response) == "Subscription.criteria", criteria
    assert await _count(harness) == 0


async def test_endpoints_must_be_http_and_channels_served(harness: Harness) -> None:
    bad_endpoint = criteria_subscription("ftp://example.org/hook", "Patient?name=x")
    response = await harness.http.post("/Subscription", json=bad_endpoint)
    assert response.status_code == 422
    assert _issue_expression(response) == "Subscription.channel.endpoint"
    email = criteria_subscription("mailto:a@example.org", "Patient?name=x")
    email["channel"]["type"] = "email"
    response = await harness.http.post("/Subscription", json=email)
    assert response.status_code == 422
    assert _issue_expression(response) == "Subscription.channel.type"
    assert await _count(harness) == 0


async def test_a_client_may_not_set_error_and_may_turn_off(harness: Harness) -> None:
    sub = criteria_subscription("http://127.0.0.1:9/hook", "Patient?name=x")
    sub["status"] = "error"
    response = await harness.http.post("/Subscription", json=sub)
    assert response.status_code == 422
    assert _issue_expression(response) == "Subscription.status"
    sub["status"] = "active"  # taken as requested, and accepted
    created = await harness.create(sub)
    assert created["status"] == "active"
    created["status"] = "off"
    response = await harness.http.put(f"/Subscription/{created['id']}", json=created)
    assert response.status_code == 200
    assert response.json()["status"] == "off"


async def test_an_end_in_the_past_turns_the_subscription_off(harness: Harness) -> None:
    sub = criteria_subscription("http://127.0.0.1:9/hook", "Patient?name=x")
    sub["end"] = (START - timedelta(days=1)).isoformat()
    created = await harness.create(sub)
    assert created["status"] == "off"


async def test_topics_must_be_known_and_filters_valid(harness: Harness) -> None:
    unknown = topic_subscription("http://127.0.0.1:9/hook")
    unknown["criteria"] = "http://example.org/no-such-topic"
    response = await harness.http.post("/Subscription", json=unknown)
    assert response.status_code == 400
    assert _issue_expression(response) == "Subscription.criteria"
    bad_filter = topic_subscription("http://127.0.0.1:9/hook", filters=("Encounter?bogus=1",))
    response = await harness.http.post("/Subscription", json=bad_filter)
    assert response.status_code == 400
    assert await _count(harness) == 0
    # A topic rest-hook subscription waits for its handshake.
    good = topic_subscription("http://127.0.0.1:9/hook", filters=("Encounter?patient=Patient/1",))
    assert (await harness.create(good))["status"] == "requested"


async def test_the_r4_examples(harness: Harness) -> None:
    examples = SHARED_DATA / "r4" / "examples"
    example = orjson.loads((examples / "Subscription-example.json").read_bytes())
    # Its `end` (2021) has passed: accepted, and off at once.
    assert (await harness.create(example))["status"] == "off"
    example.pop("end")
    created = await harness.create(example)
    assert created["status"] == "active"
    assert created["criteria"] == example["criteria"]
    in_error = orjson.loads((examples / "Subscription-example-error.json").read_bytes())
    response = await harness.http.post("/Subscription", json=in_error)
    assert response.status_code == 422
