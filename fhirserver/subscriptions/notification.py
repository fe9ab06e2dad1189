"""Topic-based notification Bundles for R4 (Subscriptions R5 Backport IG 1.1.0).

What an R4 server sends, per the IG's pages:
- "Notifications" (notifications.html): every notification is a Bundle of type
  `history` whose first entry is the SubscriptionStatus, in R4 a Parameters resource
  with the profile `backport-subscription-status-r4` (StructureDefinition
  backport-subscription-notification-r4, invariant backport-notification-bundle-r4-1).
  History Bundles need `entry.request` and `entry.response` on every entry (R4 bdl-3,
  bdl-4): entry[0]'s request "SHALL be filled out to match a request to the $status
  operation"; the others SHOULD read as the change that happened (POST, PUT, ...), or
  a GET of the resource.
- "Payloads" (payloads.html): `empty` carries no `focus` / `additional-context` and no
  entry besides the status; `id-only` SHALL carry `focus`, and its entries a `fullUrl`
  and `request` but no resource; `full-resource` SHALL carry `focus` and an entry with
  the resource for each resource of the notification.
- StructureDefinition backport-subscription-status-r4: `subscription` (Reference),
  `topic` (canonical, 0..1: "SHOULD NOT be present when using empty payloads"),
  `status`, `type`, `events-since-subscription-start` and `notification-event.event-number`
  as strings (R4 has no integer64), `notification-event.timestamp` an instant, `error`
  CodeableConcepts.
- OperationDefinitions backport-subscription-status (`$status`: a `searchset` of status
  resources, type `query-status`) and backport-subscription-events (`$events`: a
  notification Bundle of type `history`, here with type `query-event`).

Pure functions: no store, no clock, no randomness (ids derive from the caller's), so a
notification rebuilt for a redelivery is the same document.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhirserver.resources.meta import format_instant

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)

# ValueSet subscription-notification-type (R4B/R5; the backport profile binds `type` to it).
HANDSHAKE, HEARTBEAT = "handshake", "heartbeat"
EVENT_NOTIFICATION, QUERY_STATUS, QUERY_EVENT = "event-notification", "query-status", "query-event"
KINDS = frozenset({HANDSHAKE, HEARTBEAT, EVENT_NOTIFICATION, QUERY_STATUS, QUERY_EVENT})
# Kinds that are about the subscription, not about events ("handshake and heartbeat
# notifications" carry none; `$status` reports counts only).
_EVENTLESS = frozenset({HANDSHAKE, HEARTBEAT, QUERY_STATUS})

# ValueSet backport-content-value-set (extension backport-payload-content).
EMPTY, ID_ONLY, FULL_RESOURCE = "empty", "id-only", "full-resource"
CONTENTS = frozenset({EMPTY, ID_ONLY, FULL_RESOURCE})

# ValueSet subscription-status (R4).
STATUSES = frozenset({"requested", "active", "error", "off", "entered-in-error"})

# How each interaction reads as a history entry (R4 http.html#history; the IG's R4
# full-resource example: POST "Encounter", response 201).
_REQUEST_METHOD = {"create": "POST", "update": "PUT", "delete": "DELETE"}
_RESPONSE_STATUS = {"create": "201", "update": "200", "delete": "204"}


@dataclass(frozen=True)
class EventData:
    """One numbered event of a subscription, as its notification reports it."""

    number: int  # eventsSinceSubscriptionStart numbering: 1, 2, 3 ...
    timestamp: datetime  # when the event happened (the version's lastUpdated)
    focus_type: str
    focus_id: str
    interaction: str  # "create" | "update" | "delete"
    resource: dict[str, Any] | None = None  # the focus as of the event (None if deleted)
    additional: tuple[dict[str, Any], ...] = ()  # notificationShape includes


def status_parameters(
    *,
    subscription_id: str,
    topic: str | None,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[EventData],
    content: str,
    base_url: str,
    errors: Sequence[str | Mapping[str, Any]] = (),
    status_id: str | None = None,
) -> dict[str, Any]:
    """The SubscriptionStatus as an R4 Parameters (profile backport-subscription-status-r4).

    `errors` are texts, or CodeableConcepts as they are (e.g. a coding from
    http://terminology.hl7.org/CodeSystem/subscription-error). `status_id` defaults to
    an id derived from the content, so the same status is the same resource.
    """
    _check(kind=kind, status=status, content=content, events=events)
    subscription = _subscription_url(base_url, subscription_id)
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": subscription}}
    ]
    # Topic: "SHOULD NOT be present when using `empty` payloads" (the profile's comment on
    # parameter[topic]); a criteria (non-topic) subscription has none.
    if topic is not None and content != EMPTY:
        parameters.append({"name": "topic", "valueCanonical": topic})
    parameters += [
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        # Counts events only: "NOT incremented for handshake and heartbeat notifications".
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    parameters += [_notification_event(event, content, base_url) for event in events]
    parameters += [{"name": "error", "valueCodeableConcept": _concept(e)} for e in errors]
    if status_id is None:
        numbers = ",".join(str(event.number) for event in events)
        status_id = _derived_id(
            f"{subscription}/$status|{kind}|{status}|{events_since_start}|{numbers}"
        )
    return {
        "resourceType": "Parameters",
        "id": status_id,
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def notification_bundle(
    *,
    subscription_id: str,
    topic: str | None,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[EventData],
    content: str,
    base_url: str,
    bundle_id: str,
    timestamp: datetime,
    errors: Sequence[str | Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A notification Bundle (`history`): the status first, then per event what `content`
    allows. `kind` "query-event" is what `$events` returns."""
    status_id = _derived_id(f"urn:uuid:{bundle_id}#status")
    status_resource = status_parameters(
        subscription_id=subscription_id,
        topic=topic,
        status=status,
        kind=kind,
        events_since_start=events_since_start,
        events=events,
        content=content,
        base_url=base_url,
        errors=errors,
        status_id=status_id,
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status_id}",
            "resource": status_resource,
            # "the request SHALL be filled out to match a request to the $status operation"
            "request": {
                "method": "GET",
                "url": f"{_subscription_url(base_url, subscription_id)}/$status",
            },
            "response": {"status": "200"},
        }
    ]
    if content != EMPTY:
        # "empty": "notification bundles SHALL not contain Bundle.entry elements other
        # than the SubscriptionStatus".
        seen: set[str] = set()
        for event in events:
            entries.append(_focus_entry(event, content, base_url))
            for resource in event.additional:
                entry = _additional_entry(resource, content, base_url)
                if entry["fullUrl"] not in seen:
                    seen.add(entry["fullUrl"])
                    entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": format_instant(timestamp),
        "entry": entries,
    }


def status_bundle(
    statuses: Sequence[dict[str, Any]],
    base_url: str,
    bundle_id: str,
    timestamp: datetime,
    *,
    self_url: str | None = None,
) -> dict[str, Any]:
    """`$status`'s answer: "a bundle containing one or more subscription status resources,
    one per Subscription being queried. The Bundle type is searchset." Each status is a
    `status_parameters(kind="query-status", ...)`. `self_url` defaults to the type-level
    operation's URL."""
    entries = [
        {
            "fullUrl": f"urn:uuid:{resource['id']}",
            "resource": resource,
            "search": {"mode": "match"},
        }
        for resource in statuses
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "searchset",
        "timestamp": format_instant(timestamp),
        "total": len(entries),
        "link": [{"relation": "self", "url": self_url or f"{base_url}/Subscription/$status"}],
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _check(*, kind: str, status: str, content: str, events: Sequence[EventData]) -> None:
    """Programming errors in what the caller asks for (not client input): a ValueError."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification type {kind!r}")
    if status not in STATUSES:
        raise ValueError(f"unknown subscription status {status!r}")
    if content not in CONTENTS:
        raise ValueError(f"unknown payload content {content!r}")
    if kind in _EVENTLESS and events:
        raise ValueError(f"a {kind} notification carries no events")
    if kind == EVENT_NOTIFICATION and not events:
        raise ValueError("an event-notification carries at least one event")
    for event in events:
        if event.interaction not in _REQUEST_METHOD:
            raise ValueError(f"unknown interaction {event.interaction!r}")


def _notification_event(event: EventData, content: str, base_url: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": str(event.number)},
        {"name": "timestamp", "valueInstant": format_instant(event.timestamp)},
    ]
    if content != EMPTY:
        # id-only and full-resource "SHALL include references to the appropriate focus
        # resources"; empty "SHALL NOT include references to resources".
        focus = f"{base_url}/{event.focus_type}/{event.focus_id}"
        parts.append({"name": "focus", "valueReference": {"reference": focus}})
        parts += [
            {"name": "additional-context", "valueReference": {"reference": _url(r, base_url)}}
            for r in event.additional
        ]
    return {"name": "notification-event", "part": parts}


def _focus_entry(event: EventData, content: str, base_url: str) -> dict[str, Any]:
    """The focus as a history entry: the change itself. A deleted focus has no resource
    (history entries for deletes carry none); full-resource without a resource still
    fills request and response, as payloads.html asks when a server cannot include it."""
    reference = f"{event.focus_type}/{event.focus_id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{reference}"}
    if content == FULL_RESOURCE and event.resource is not None and event.interaction != "delete":
        entry["resource"] = event.resource
    method = _REQUEST_METHOD[event.interaction]
    entry["request"] = {
        "method": method,
        "url": event.focus_type if method == "POST" else reference,
    }
    entry["response"] = {"status": _RESPONSE_STATUS[event.interaction]}
    return entry


def _additional_entry(resource: Mapping[str, Any], content: str, base_url: str) -> dict[str, Any]:
    """An included resource: read, not changed, so a GET (the IG's R4 multi-resource
    example: GET Patient/..., response 200)."""
    entry: dict[str, Any] = {"fullUrl": _url(resource, base_url)}
    if content == FULL_RESOURCE:
        entry["resource"] = resource
    entry["request"] = {"method": "GET", "url": f"{resource['resourceType']}/{resource['id']}"}
    entry["response"] = {"status": "200"}
    return entry


def _url(resource: Mapping[str, Any], base_url: str) -> str:
    return f"{base_url}/{resource['resourceType']}/{resource['id']}"


def _subscription_url(base_url: str, subscription_id: str) -> str:
    return f"{base_url}/Subscription/{subscription_id}"


def _concept(error: str | Mapping[str, Any]) -> dict[str, Any]:
    return {"text": error} if isinstance(error, str) else dict(error)


def _derived_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))
