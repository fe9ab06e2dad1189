"""A topic subscription's notifications, from its stored events: loads what the
payload carries (the focus as of each event for `full-resource`, and what the topic's
`notificationShape` adds to it) and builds the Bundle with `notification.py`
(Subscriptions Backport IG 1.1.0 "Notifications", "Payloads")."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import Interaction
from fhirserver.interactions.guard import only_visible
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Store
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, events_so_far
from fhirserver.subscriptions.model import SubscriptionSpec
from fhirserver.subscriptions.notification import (
    EMPTY,
    FULL_RESOURCE,
    QUERY_STATUS,
    EventData,
    notification_bundle,
    status_bundle,
    status_parameters,
)


async def event_resource(store: Store, event: Event) -> dict[str, Any] | None:
    found = await store.vread(event.resource_type, event.resource_id, event.version)
    if found is None or found.body is None:
        return None
    body: dict[str, Any] = orjson.loads(found.body)
    return body


async def additional_context(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    event: Event,
    reader: Access | None = None,
) -> tuple[dict[str, Any], ...]:
    """What the topic's `notificationShape` brings in with the event's focus (the
    `additional-context` of id-only and full-resource payloads; `empty` "SHALL NOT
    include references to resources", payloads.html), found by the server's own
    `_include` / `_revinclude` from the focus as it is now, and only what the
    subscription's owner may read (DESIGN.md "Authorization") and, when someone reads
    the notification (`$events`, a websocket binding), what that `reader` may read too;
    a rest-hook delivery has no reader but the owner."""
    topic = context.topics.get(spec.topic) if spec.topic is not None else None
    if topic is None or spec.content == EMPTY or event.interaction == "delete":
        return ()
    shape = topic.shape_params(event.resource_type)
    if not shape:
        return ()
    query = parse_search((event.resource_type,), [("_id", event.resource_id), *shape], strict=True)
    result = await context.store.search(query)
    readable = only_visible(spec.owner, Interaction.READ, result.included)
    if reader is not None:
        readable = only_visible(reader, Interaction.READ, readable)
    return tuple(orjson.loads(v.body) for v in readable if v.body is not None)


async def notification(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    kind: str,
    events: Sequence[Event],
    total: int | None = None,
    reader: Access | None = None,
) -> dict[str, Any]:
    """A topic subscription's notification Bundle of `kind` (handshake, heartbeat,
    event-notification, query-event) for `events`; `total` the events so far; `reader`
    who reads it besides the owner (None for a rest-hook delivery)."""
    now = context.clock()
    if total is None:
        # Backport IG: the count as of this notification (its last event), else so far.
        total = events[-1].number if events else await events_so_far(context.store, spec, now)
    data = [
        EventData(
            number=e.number,
            timestamp=e.timestamp,
            focus_type=e.resource_type,
            focus_id=e.resource_id,
            interaction=e.interaction,
            resource=(
                await event_resource(context.store, e) if spec.content == FULL_RESOURCE else None
            ),
            additional=await additional_context(context, spec, e, reader),
        )
        for e in events
    ]
    return notification_bundle(
        subscription_id=spec.id,
        topic=spec.topic,
        status=spec.status,
        kind=kind,
        events_since_start=total,
        events=data,
        content=spec.content,
        base_url=context.base_url,
        # Random: two notifications of one subscription are two Bundles.
        bundle_id=str(uuid.uuid4()),
        timestamp=now,
    )


async def status_searchset(
    context: SubscriptionContext, specs: Sequence[SubscriptionSpec]
) -> dict[str, Any]:
    """`$status` (OperationDefinition backport-subscription-status): a searchset of each
    subscription's status Parameters, with its `error` if it is in error."""
    now = context.clock()
    statuses = [
        status_parameters(
            subscription_id=spec.id,
            topic=spec.topic,
            status=spec.status,
            kind=QUERY_STATUS,
            events_since_start=await events_so_far(context.store, spec, now),
            events=(),
            content=spec.content,
            base_url=context.base_url,
            errors=(spec.error,) if spec.error else (),
        )
        for spec in specs
    ]
    return status_bundle(statuses, context.base_url, str(uuid.uuid4()), now)
