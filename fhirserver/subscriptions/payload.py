"""What an R4 criteria (non-topic) rest-hook notification is (R4 subscription.html).

R4 4.0.1, CodeSystem subscription-channel-type, `rest-hook`: "The channel is executed
by making a post to the URI. If a payload is included, the URL is interpreted as the
service base, and an update (PUT) is made." Subscription.channel.payload: "The mime type
to send the payload in - either application/fhir+xml, or application/fhir+json. If the
payload is not present, then there is no payload in the notification, just a
notification." So:
- no `channel.payload`: POST to the endpoint, no body;
- `channel.payload` set: PUT [endpoint]/[type]/[id] with the resource, as an update
  to a server at that base would be, in that mime type.
Criteria are tested on the new state only, so "there is no notification when a resource
is deleted" (subscription.html): there is no rest-hook request without a resource to send.

Topic-based subscriptions (Backport IG) POST a notification Bundle instead; see
notification.py. This server writes JSON only, so an XML payload is refused when the
Subscription is accepted (`check_payload`), never found out at delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirserver.errors import NotSupported
from fhirserver.resources import codec

# R4 http.html#mime-type: the FHIR JSON mime type, and plain JSON which servers accept.
JSON_PAYLOADS = frozenset({"application/fhir+json", "application/json"})


def check_payload(subscription: Mapping[str, Any]) -> str | None:
    """`channel.payload` if this server can send it (None: no payload); 400 otherwise."""
    payload = (subscription.get("channel") or {}).get("payload")
    if payload is None:
        return None
    if not isinstance(payload, str) or _media_type(payload) not in JSON_PAYLOADS:
        raise NotSupported(
            f"Subscription.channel.payload {payload!r} is not supported: "
            "use application/fhir+json, or omit it for notifications without content",
            expression="Subscription.channel.payload",
        )
    return payload


def resthook_request(
    subscription: Mapping[str, Any], resource: Mapping[str, Any] | None
) -> tuple[str, str, bytes | None, str | None]:
    """(method, path suffix, body, Content-Type) of the notification for `resource`.

    The suffix goes after the endpoint with its trailing "/" removed: "" for the
    POST, "/[type]/[id]" for the PUT ("the URL is interpreted as the service base").
    """
    payload = check_payload(subscription)
    if payload is None:
        return "POST", "", None, None
    if resource is None:
        raise ValueError("an R4 criteria subscription is not notified of deletes")
    suffix = f"/{resource['resourceType']}/{resource['id']}"
    return "PUT", suffix, codec.dumps(resource), payload


def _media_type(value: str) -> str:
    """The type/subtype of a mime type, without parameters such as fhirVersion."""
    return value.split(";", 1)[0].strip().lower()
