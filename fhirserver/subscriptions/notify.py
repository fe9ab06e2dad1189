"""Notification Bundles of topic subscriptions (Backport IG "Notifications": a
`history` Bundle whose first entry is the subscription-status Parameters).

`status_parameters` and `_event_notification` are stand-ins for helper B2's
subscriptions/notification.py (`status_parameters`, `notification_bundle`): at merge
they become calls to those; `notification` (loading the events' resources) stays.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from fhirserver.storage.base import Store
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, events_so_far
from fhirserver.subscriptions.model import SubscriptionSpec


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def status_parameters(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    total: int,
    events: Sequence[tuple[Event, dict[str, Any] | None]],
) -> dict[str, Any]:
    """Stand-in for subscriptions/notification.py `status_parameters` (helper B2's, to
    be swapped in at merge): the subscription-status Parameters (Backport IG
    "SubscriptionStatus")."""
    base = context.base_url.rstrip("/")
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{spec.id}"}},
        {"name": "topic", "valueCanonical": spec.topic},
        {"name": "status", "valueCode": spec.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(total)},
    ]
    for event, _ in events:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": _instant(event.timestamp)},
        ]
        if spec.content != "empty":
            focus = f"{base}/{event.resource_type}/{event.resource_id}"
            part.append({"name": "focus", "valueReference": {"reference": focus}})
        parameters.append({"name": "notification-event", "part": part})
    if spec.topic is None:
        parameters = [p for p in parameters if p["name"] != "topic"]
    return {"resourceType": "Parameters", "id": uuid.uuid4().hex, "parameter": parameters}


def _event_notification(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    total: int,
    events: Sequence[tuple[Event, dict[str, Any] | None]],
) -> dict[str, Any]:
    """Stand-in for subscriptions/notification.py `notification_bundle` (helper B2's, to
    be swapped in at merge): a `history` Bundle whose first entry is the
    subscription-status Parameters (Backport IG "Notifications")."""
    base = context.base_url.rstrip("/")
    status = status_parameters(context, spec, kind, total, events)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status['id']}",
            "resource": status,
            "request": {"method": "GET", "url": f"Subscription/{spec.id}/$status"},
            "response": {"status": "200"},
        }
    ]
    for event, resource in events:
        if spec.content == "empty":
            continue
        entry: dict[str, Any] = {
            "fullUrl": f"{base}/{event.resource_type}/{event.resource_id}",
            "request": {"method": "PUT", "url": f"{event.resource_type}/{event.resource_id}"},
            "response": {"status": "200"},
        }
        if spec.content == "full-resource" and resource is not None:
            entry["resource"] = resource
        entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "type": "history",
        "timestamp": _instant(context.clock()),
        "entry": entries,
    }


async def event_resource(store: Store, event: Event) -> dict[str, Any] | None:
    found = await store.vread(event.resource_type, event.resource_id, event.version)
    if found is None or found.body is None:
        return None
    body: dict[str, Any] = orjson.loads(found.body)
    return body


async def notification(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    events: Sequence[Event],
    total: int | None = None,
) -> dict[str, Any]:
    """A topic subscription's notification Bundle of `kind` (handshake, heartbeat,
    event-notification, query-event) for `events`; `total` the events so far."""
    now = context.clock()
    if total is None:
        # Backport IG: the count as of this notification (its last event), else so far.
        total = events[-1].number if events else await events_so_far(context.store, spec.id, now)
    loaded = [
        (e, await event_resource(context.store, e) if spec.content == "full-resource" else None)
        for e in events
    ]
    return _event_notification(context, spec, kind, total, loaded)
