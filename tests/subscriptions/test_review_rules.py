"""Review bug #5: the Backport IG channel extensions ("Subscriptions on R4":
`backport-heartbeat-period` and `backport-timeout` are unsignedInt seconds,
`backport-max-count` a positiveInt) are checked on write, and a heartbeat period is
at least 10 s: a zero or negative period rescheduled the heartbeat in the past, a
notification flood."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fhirserver.subscriptions.model import read_subscription
from tests.subscriptions.conftest import Harness, criteria_subscription, topic_subscription

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def _with(name: str, kind: str, value: Any) -> dict[str, Any]:
    resource = topic_subscription("http://127.0.0.1:9/hook")
    resource["channel"]["extension"] = [{"url": BACKPORT + name, kind: value}]
    return resource


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("backport-heartbeat-period", 0),
        ("backport-heartbeat-period", 9),
        ("backport-timeout", 0),
    ],
)
async def test_a_zero_or_too_short_period_is_refused(
    harness: Harness, name: str, value: int
) -> None:
    """Valid unsignedInts the server does not take: 422 naming the extension."""
    response = await harness.http.post("/Subscription", json=_with(name, "valueUnsignedInt", value))
    assert response.status_code == 422, response.text
    assert name in response.text
    found = await harness.http.get("/Subscription")
    assert found.json().get("total", 0) == 0


@pytest.mark.parametrize(
    ("name", "kind", "value"),
    [
        ("backport-heartbeat-period", "valueUnsignedInt", -60),
        ("backport-heartbeat-period", "valueUnsignedInt", "60"),
        ("backport-heartbeat-period", "valueUnsignedInt", True),
        ("backport-timeout", "valueUnsignedInt", -1),
        ("backport-timeout", "valueUnsignedInt", 2.5),
        ("backport-max-count", "valuePositiveInt", 0),
        ("backport-max-count", "valuePositiveInt", -3),
        # More events per notification than the server sends (MAX_EVENTS_PER_NOTIFICATION):
        # a backlog would become one Bundle too large to build and send in time.
        ("backport-max-count", "valuePositiveInt", 101),
        ("backport-max-count", "valuePositiveInt", 10**9),
    ],
)
async def test_values_not_of_their_type_are_refused(
    harness: Harness, name: str, kind: str, value: Any
) -> None:
    """Not an unsignedInt / positiveInt at all: refused (the parser's 400, or 422)."""
    response = await harness.http.post("/Subscription", json=_with(name, kind, value))
    assert response.status_code in (400, 422), response.text
    assert kind in response.text or name in response.text
    found = await harness.http.get("/Subscription")
    assert found.json().get("total", 0) == 0


async def test_channel_extensions_in_range_are_taken(harness: Harness) -> None:
    resource = topic_subscription(harness.receiver.url, heartbeat=10, max_count=1)
    resource["channel"]["extension"].append(
        {"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 1}
    )
    response = await harness.http.post("/Subscription", json=resource)
    assert response.status_code == 201, response.text


def test_a_stored_period_below_the_minimum_is_read_as_the_minimum() -> None:
    """A subscription stored before the check: no heartbeat in the past, none faster
    than every 10 s."""
    for value, seconds in ((0, None), (-5, None), (3, 10), (60, 60)):
        resource = _with("backport-heartbeat-period", "valueUnsignedInt", value)
        spec = read_subscription({**resource, "id": "x"})
        assert spec.heartbeat_seconds == seconds, value
        if seconds:
            assert timedelta(seconds=spec.heartbeat_seconds or 0) >= timedelta(seconds=10)
    bad = _with("backport-timeout", "valueUnsignedInt", -1)
    assert read_subscription(bad).timeout_seconds is None


@pytest.mark.parametrize(
    "header",
    [
        "Host: evil.example",
        "host : evil.example",
        "X-Signature: sha256=forged",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "X-Tenant: clinic-\u00e9",
        "X-Tenant: a\u0007b",
        "X T: a",
        "no colon here",
    ],
)
async def test_channel_headers_that_would_forge_or_break_a_request_are_refused(
    harness: Harness, header: str
) -> None:
    """Review bug #6 (R4 `channel.header`: "Name: value" HTTP headers): names the
    server sets itself (Host, X-Signature, framing) and values that are not printable
    ASCII are refused on write (422), not sent or retried for ever."""
    resource = criteria_subscription(
        harness.receiver.url, "Patient?family=smith", header=["X-Ok: 1", header]
    )
    response = await harness.http.post("/Subscription", json=resource)
    assert response.status_code == 422, response.text
    assert "Subscription.channel.header" in response.text
    found = await harness.http.get("/Subscription")
    assert found.json().get("total", 0) == 0


async def test_ordinary_channel_headers_are_taken(harness: Harness) -> None:
    resource = criteria_subscription(
        harness.receiver.url,
        "Patient?family=smith",
        header=["Authorization: Bearer abc.def-1~", "X-Tenant: clinic 1"],
    )
    response = await harness.http.post("/Subscription", json=resource)
    assert response.status_code == 201, response.text


def test_a_stored_max_count_above_the_cap_is_read_as_the_cap() -> None:
    """A subscription stored before the cap sends at most 100 events a notification."""
    resource = topic_subscription("http://127.0.0.1:9/hook", max_count=10**9)
    assert read_subscription(resource).max_count == 100
