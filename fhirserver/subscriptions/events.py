"""Each subscription's event log, kept in the store's keyed records (storage/base.py
`Record`): events numbered 1, 2, 3 ... per subscription (Backport IG
`eventsSinceSubscriptionStart`), each recorded before it is delivered, and kept for the
retention period for redelivery, `$events` and websocket replay.

Every operation is a point read or write (no scan): event n of subscription s is the
record (EVENTS + k, n), where k is the key of s's current incarnation (model.py
`records_key`): a subscription deleted and created again under its id numbers from 1
again; the old events expire (the old count and delivery state, one small record each,
are left: nothing scans for them). Each function takes the subscription as read (its
`SubscriptionSpec`: that incarnation's key, whatever happened since) or by id (the
current incarnation's key is looked up: one point read).

Recording is idempotent per (subscription, change): the matcher works through the
change log in order, so a change at or below the last recorded event's `seq` has been
handled already, whether by this matcher before a crash or by a second one racing it;
of two adds of one number, one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Store
from fhirserver.subscriptions.kinds import COUNT, DELIVERY, EVENTS
from fhirserver.subscriptions.model import SubscriptionSpec, records_key

# A subscription by id, or as read.
Subscription = str | SubscriptionSpec


@dataclass(frozen=True)
class Event:
    number: int
    # The change log position of the version the event is about.
    seq: int
    resource_type: str
    resource_id: str
    version: int
    interaction: str
    timestamp: datetime

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.resource_type,
            "id": self.resource_id,
            "version": self.version,
            "interaction": self.interaction,
            "at": to_micros(self.timestamp),
        }

    @classmethod
    def of(cls, number: int, body: dict[str, Any]) -> Event:
        return cls(
            number,
            int(body["seq"]),
            str(body["type"]),
            str(body["id"]),
            int(body["version"]),
            str(body["interaction"]),
            from_micros(int(body["at"])),
        )


def _key(number: int) -> str:
    return f"{number:012d}"


async def _records(store: Store, subscription: Subscription) -> str:
    """The key of the subscription's records (a gone one's: its id, where none are new)."""
    if isinstance(subscription, SubscriptionSpec):
        return subscription.key
    found = await store.read("Subscription", subscription)
    if found is None or found.body is None:
        return subscription
    return records_key(orjson.loads(found.body))


async def _count(store: Store, key: str, now: datetime) -> int:
    found = await store.get_record(COUNT, key, now)
    return int(found["count"]) if found else 0


async def events_so_far(store: Store, subscription: Subscription, now: datetime) -> int:
    """How many events were recorded for the subscription (its last number)."""
    return await _count(store, await _records(store, subscription), now)


async def append_event(
    store: Store, subscription: Subscription, event: Event, now: datetime, keep: timedelta
) -> int | None:
    """Record the event under the next number; None if this change was recorded already.
    `event.number` is ignored."""
    key = await _records(store, subscription)
    count = await _count(store, key, now)
    kind = EVENTS + key
    while True:
        if count > 0:
            last = await store.get_record(kind, _key(count), now)
            if last is not None and int(last["seq"]) >= event.seq:
                await _note_count(store, key, count, now)
                return None
        number = count + 1
        if await store.add_record(kind, _key(number), event.body(), now + keep, now):
            await _note_count(store, key, number, now)
            return number
        # Someone recorded this number (a racing matcher, or this one before a crash
        # left the count behind): look at it.
        count = number


async def _note_count(store: Store, key: str, count: int, now: datetime) -> None:
    # Without an expiry, as before incarnations: a count outlives its events (it is
    # what the next number follows), and a re-created subscription has a new key.
    if await _count(store, key, now) < count:
        await store.put_record(COUNT, key, {"count": count}, None)


async def events_after(
    store: Store, subscription: Subscription, after: int, limit: int, now: datetime
) -> list[Event]:
    """Up to `limit` events numbered above `after`, oldest first (expired ones skipped)."""
    key = await _records(store, subscription)
    last = min(await _count(store, key, now), after + limit)
    found = []
    for number in range(after + 1, last + 1):
        body = await store.get_record(EVENTS + key, _key(number), now)
        if body is not None:
            found.append(Event.of(number, body))
    return found


async def delivery_state(store: Store, subscription: Subscription, now: datetime) -> dict[str, Any]:
    """How far delivery got: `delivered` (the last number delivered), `failing_since`
    (micros, while deliveries fail), `attempts`, `last_sent` (micros)."""
    key = await _records(store, subscription)
    return await store.get_record(DELIVERY, key, now) or {"delivered": 0}


async def put_delivery_state(
    store: Store,
    subscription: Subscription,
    state: dict[str, Any],
    now: datetime,
    heartbeat_failed: bool = False,
) -> None:
    """Keep `state`; `failing_since` only while something is left undelivered (events
    that failed and then expired are skipped, not retried: no retry window runs on, and
    the matcher does not wait for a retry that nobody scheduled), or while heartbeats
    fail (`heartbeat_failed`: their retry is scheduled, and is the probe)."""
    key = await _records(store, subscription)
    failing = state.get("failing_since") is not None and not heartbeat_failed
    if failing and int(state.get("delivered", 0)) >= await _count(store, key, now):
        state = {**state, "failing_since": None, "attempts": 0}
    await store.put_record(DELIVERY, key, state, None)


async def in_backoff(store: Store, subscription: Subscription, now: datetime) -> bool:
    return (await delivery_state(store, subscription, now)).get("failing_since") is not None
