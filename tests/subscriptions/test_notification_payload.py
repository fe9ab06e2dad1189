"""The R4 criteria rest-hook notification (R4 subscription.html "Channels"; CodeSystem
subscription-channel-type `rest-hook`; Subscription.channel.payload): a POST with no
body when there is no payload, else an update (PUT [endpoint]/[type]/[id]) carrying the
resource in the payload's mime type."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fhirserver.errors import NotSupported
from fhirserver.subscriptions.payload import check_payload, resthook_request

ENDPOINT = "https://receiver.example/fhir/"
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs-1",
    "meta": {"versionId": "2", "lastUpdated": "2026-12-04T10:00:00.000000Z"},
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "1975-2"}]},
    "valueQuantity": {"value": 1.25, "unit": "mg/dL"},
}


def subscription(payload: str | None = None) -> dict[str, Any]:
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": ENDPOINT}
    if payload is not None:
        channel["payload"] = payload
    return {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "Monitor bilirubin",
        "criteria": "Observation?code=http://loinc.org|1975-2",
        "channel": channel,
    }


def deliver(sub: dict[str, Any], resource: dict[str, Any] | None) -> httpx.Request:
    """Send the notification to a receiver and return what it received."""
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    method, suffix, body, content_type = resthook_request(sub, resource)
    headers = {"Content-Type": content_type} if content_type else {}
    with httpx.Client(transport=httpx.MockTransport(receiver)) as client:
        client.request(method, ENDPOINT.rstrip("/") + suffix, content=body, headers=headers)
    (request,) = received
    return request


def test_without_payload_the_receiver_gets_an_empty_post_to_the_endpoint() -> None:
    request = deliver(subscription(), OBSERVATION)
    assert request.method == "POST"
    assert str(request.url) == "https://receiver.example/fhir"
    assert request.content == b""
    assert "content-type" not in request.headers


def test_without_payload_nothing_about_the_resource_is_sent() -> None:
    assert resthook_request(subscription(), OBSERVATION) == ("POST", "", None, None)


@pytest.mark.parametrize(
    "payload",
    ["application/fhir+json", "application/json", "application/fhir+json; fhirVersion=4.0"],
)
def test_with_payload_the_receiver_gets_the_resource_put_under_the_endpoint_as_base(
    payload: str,
) -> None:
    request = deliver(subscription(payload), OBSERVATION)
    assert request.method == "PUT"
    assert str(request.url) == "https://receiver.example/fhir/Observation/obs-1"
    assert request.headers["content-type"] == payload
    assert json.loads(request.content) == OBSERVATION


def test_a_delete_is_not_notified_with_a_payload() -> None:
    # "there is no notification when a resource is deleted" (R4 subscription.html).
    with pytest.raises(ValueError):
        resthook_request(subscription("application/fhir+json"), None)


@pytest.mark.parametrize("payload", ["application/fhir+xml", "text/plain", "", 42])
def test_payloads_this_server_cannot_send_are_refused_naming_the_element(payload: Any) -> None:
    with pytest.raises(NotSupported) as refused:
        check_payload(subscription(payload))
    assert refused.value.status == 400
    assert refused.value.issues[0].expression == "Subscription.channel.payload"


def test_check_payload_returns_what_will_be_sent() -> None:
    assert check_payload(subscription()) is None
    assert check_payload(subscription("application/fhir+json")) == "application/fhir+json"
