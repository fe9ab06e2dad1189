"""`Subscription/[id]/$status` and `Subscription/[id]/$events` (Subscriptions R5
Backport IG 1.1.0 OperationDefinitions `backport-subscription-status`,
`backport-subscription-events`): what a subscription's state is, and a replay of its
numbered events that are still retained. Both need read access to the Subscription
(interactions/guard.py, through crud.read); with authorization on, `$events` also
shows only the events whose focus the caller may read, and `content` asks no more
than the subscription's own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import BadRequest
from fhirserver.interactions import crud
from fhirserver.interactions.guard import shows
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.search import search
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, events_after, events_so_far
from fhirserver.subscriptions.model import SubscriptionSpec, read_subscription
from fhirserver.subscriptions.notify import notification, status_searchset

# The most events one $events call returns, and statuses one type-level $status.
MAX_EVENTS = 100
MAX_STATUSES = 100
# The largest integer64 (FHIR datatypes.html#integer64).
_MAX_NUMBER = 2**63 - 1
_CONTENTS = ("empty", "id-only", "full-resource")


async def _spec(
    context: SubscriptionContext, subscription_id: str, access: Access
) -> SubscriptionSpec:
    version = await crud.read(context.store, "Subscription", subscription_id, access)
    resource: dict[str, Any] = orjson.loads(version.body or b"{}")
    return read_subscription(resource)


async def subscription_status(
    context: SubscriptionContext, subscription_id: str, access: Access
) -> dict[str, Any]:
    """$status: a searchset Bundle with the subscription's status Parameters."""
    return await status_searchset(context, [await _spec(context, subscription_id, access)])


async def subscriptions_status(
    context: SubscriptionContext,
    ids: Sequence[str],
    statuses: Sequence[str],
    options: ReadOptions,
) -> dict[str, Any]:
    """Type-level `Subscription/$status` (backport-subscription-status, `id` and `status`
    each OR'ed): the status of each listed Subscription the caller may read, or of every
    one it may read; unknown or unreadable ids are left out. At most MAX_STATUSES."""
    params = [("_count", str(MAX_STATUSES))]
    if ids:
        params.append(("_id", ",".join(ids)))
    if statuses:
        params.append(("status", ",".join(statuses)))
    _, result = await search(context.store, ("Subscription",), params, options)
    specs = [read_subscription(orjson.loads(v.body)) for v in result.matches if v.body]
    return await status_searchset(context, specs)


def _more(asked: str, own: str) -> bool:
    return _CONTENTS.index(asked) > _CONTENTS.index(own) if own in _CONTENTS else True


async def _shows(context: SubscriptionContext, access: Access, event: Event) -> bool:
    found = await context.store.vread(event.resource_type, event.resource_id, event.version)
    return found is not None and shows(access, Interaction.READ, found)


async def visible_events(
    context: SubscriptionContext, access: Access, events: Sequence[Event]
) -> list[Event]:
    """The events `access` may see, for `$events` and the websocket channel alike.
    Reading the Subscription is not reading its events' focus (DESIGN.md
    "Authorization"): an event shows only if the caller may read that version."""
    if access == Access.everything():
        return list(events)
    return [e for e in events if await _shows(context, access, e)]


def _number(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    # isdigit() alone takes "²" and other non-ASCII digits int() refuses.
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > _MAX_NUMBER:
        raise BadRequest(f"{name} must be a whole number (integer64)", expression=name)
    return int(value)


async def subscription_events(
    context: SubscriptionContext,
    subscription_id: str,
    access: Access,
    since: str | None = None,
    until: str | None = None,
    content: str | None = None,
) -> dict[str, Any]:
    """$events: a `query-event` notification Bundle of the retained events numbered
    `eventsSinceNumber` to `eventsUntilNumber` (inclusive; at most MAX_EVENTS), with
    the payload `content` asked for (the subscription's own by default)."""
    spec = await _spec(context, subscription_id, access)
    low = _number(since, "eventsSinceNumber") or 1
    high = _number(until, "eventsUntilNumber")
    if content is not None and content not in _CONTENTS:
        raise BadRequest(f"content must be one of {', '.join(_CONTENTS)}", expression="content")
    restricted = access != Access.everything()
    if restricted and content is not None and _more(content, spec.content):
        # The owner chose what the payload carries; a reader asks no more of it.
        raise BadRequest(
            f"content may not ask more than the subscription's own ({spec.content})",
            expression="content",
        )
    now = context.clock()
    total = await events_so_far(context.store, spec, now)
    last = min(total if high is None else high, total)
    count = max(0, min(last - low + 1, MAX_EVENTS))
    events = await events_after(context.store, spec, low - 1, count, now)
    events = await visible_events(context, access, events)
    if content is not None:
        spec = SubscriptionSpec(**{**spec.__dict__, "content": content})
    return await notification(context, spec, "query-event", events, total, access)
