"""The store as the websocket channel's source of notifications (the
`NotificationSource` protocol of subscriptions/websocket.py): the Subscription, its
numbered events as notification Bundles (one event each, for replay from any number
still retained; shown as `$events` shows them to the socket's caller), the count so
far, and handshake and heartbeat Bundles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from fhirserver.auth.access import Access
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, events_after, events_so_far
from fhirserver.subscriptions.model import SubscriptionSpec, read_subscription
from fhirserver.subscriptions.notification import EMPTY
from fhirserver.subscriptions.notify import notification
from fhirserver.subscriptions.operations import visible_events


class StoreNotifications:
    def __init__(self, context: SubscriptionContext) -> None:
        self.context = context

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        found = await self.context.store.read("Subscription", subscription_id)
        if found is None or found.body is None:
            return None
        resource: dict[str, Any] = orjson.loads(found.body)
        return resource

    async def _spec(self, subscription_id: str) -> SubscriptionSpec:
        resource = await self.subscription(subscription_id)
        if resource is None:
            raise LookupError(f"Subscription/{subscription_id} is gone")
        return read_subscription(resource)

    async def events_after(
        self, subscription_id: str, after: int, limit: int, access: Access
    ) -> list[tuple[int, dict[str, Any]]]:
        spec = await self._spec(subscription_id)
        now = self.context.clock()
        found = await events_after(self.context.store, spec, after, limit, now)
        return [(event.number, await self._notification(spec, event, access)) for event in found]

    async def _notification(
        self, spec: SubscriptionSpec, event: Event, access: Access
    ) -> dict[str, Any]:
        # An event whose focus `access` may not read (the test `$events` applies) is
        # sent as `empty` content: its number and time, no focus reference, no
        # resource (the IG's `empty` "SHALL NOT include references to resources"). It
        # is still sent: an event-notification carries at least one event, and the
        # count tells of it anyway.
        if not await visible_events(self.context, access, [event]):
            spec = replace(spec, content=EMPTY)
        return await notification(self.context, spec, "event-notification", [event], reader=access)

    async def events_so_far(self, subscription_id: str) -> int:
        return await events_so_far(self.context.store, subscription_id, self.context.clock())

    async def handshake(self, subscription_id: str) -> dict[str, Any]:
        spec = await self._spec(subscription_id)
        return await notification(self.context, spec, "handshake", ())

    async def heartbeat(self, subscription_id: str) -> dict[str, Any]:
        spec = await self._spec(subscription_id)
        return await notification(self.context, spec, "heartbeat", ())
