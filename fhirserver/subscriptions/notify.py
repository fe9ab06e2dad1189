"""Notification Bundles of topic subscriptions (Subscriptions Backport IG 1.1.0
"Notifications", profile backport-subscription-notification-r4): a `history` Bundle
whose first entry is the subscription-status Parameters, then one entry per event
unless the payload is `empty`: `id-only` the entry's `fullUrl` and `request`,
`full-resource` the resource as of the event too.
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

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def status_parameters(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    total: int,
    events: Sequence[tuple[Event, dict[str, Any] | None]],
) -> dict[str, Any]:
    """The subscription-status Parameters (Backport IG profile
    backport-subscription-status-r4). `topic` is left out of `empty` payloads (the
    profile: it SHOULD NOT be present there)."""
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
    if spec.topic is None or spec.content == "empty":
        parameters = [p for p in parameters if p["name"] != "topic"]
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def _event_notification(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    total: int,
    events: Sequence[tuple[Event, dict[str, Any] | None]],
) -> dict[str, Any]:
    """The notification Bundle (Backport IG "Notifications"; the R4 examples
    r4-notification-id-only, r4-notification-full-resource)."""
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
            **_exchange(event),
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


def _exchange(event: Event) -> dict[str, Any]:
    """The entry's `request`/`response`: the interaction that made the event, as a
    history Bundle records it (R4 bundle.html "history"; the IG's examples: a create is
    `POST Encounter`, 201)."""
    path = f"{event.resource_type}/{event.resource_id}"
    if event.interaction == "create":
        return {
            "request": {"method": "POST", "url": event.resource_type},
            "response": {"status": "201"},
        }
    if event.interaction == "delete":
        return {"request": {"method": "DELETE", "url": path}, "response": {"status": "204"}}
    return {"request": {"method": "PUT", "url": path}, "response": {"status": "200"}}


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
