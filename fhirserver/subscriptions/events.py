"""Each subscription's event log, kept in the store's keyed records (storage/base.py
`Record`): events numbered 1, 2, 3 ... per subscription (Backport IG
`eventsSinceSubscriptionStart`), each recorded before it is delivered, and kept for the
retention period for redelivery, `$events` and websocket replay.

Every operation is a point read or write (no scan): event n of subscription s is the
record (EVENTS + s, n). Recording is idempotent per (subscription, change): the
matcher works through the change log in order, so a change at or below the last
recorded event's `seq` has been handled already, whether by this matcher before a
crash or by a second one racing it; of two adds of one number, one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Store
from fhirserver.subscriptions.kinds import COUNT, DELIVERY, EVENTS


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


async def events_so_far(store: Store, subscription_id: str, now: datetime) -> int:
    """How many events were recorded for the subscription (its last number)."""
    found = await store.get_record(COUNT, subscription_id, now)
    return int(found["count"]) if found else 0


async def append_event(
    store: Store, subscription_id: str, event: Event, now: datetime, keep: timedelta
) -> int | None:
    """Record the event under the next number; None if this change was recorded already.
    `event.number` is ignored."""
    count = await events_so_far(store, subscription_id, now)
    kind = EVENTS + subscription_id
    while True:
        if count > 0:
            last = await store.get_record(kind, _key(count), now)
            if last is not None and int(last["seq"]) >= event.seq:
                await _note_count(store, subscription_id, count, now)
                return None
        number = count + 1
        if await store.add_record(kind, _key(number), event.body(), now + keep, now):
            await _note_count(store, subscription_id, number, now)
            return number
        # Someone recorded this number (a racing matcher, or this one before a crash
        # left the count behind): look at it.
        count = number


async def _note_count(store: Store, subscription_id: str, count: int, now: datetime) -> None:
    if await events_so_far(store, subscription_id, now) < count:
        await store.put_record(COUNT, subscription_id, {"count": count}, None)


async def events_after(
    store: Store, subscription_id: str, after: int, limit: int, now: datetime
) -> list[Event]:
    """Up to `limit` events numbered above `after`, oldest first (expired ones skipped)."""
    last = min(await events_so_far(store, subscription_id, now), after + limit)
    found = []
    for number in range(after + 1, last + 1):
        body = await store.get_record(EVENTS + subscription_id, _key(number), now)
        if body is not None:
            found.append(Event.of(number, body))
    return found


async def delivery_state(store: Store, subscription_id: str, now: datetime) -> dict[str, Any]:
    """How far delivery got: `delivered` (the last number delivered), `failing_since`
    (micros, while deliveries fail), `attempts`, `last_sent` (micros)."""
    return await store.get_record(DELIVERY, subscription_id, now) or {"delivered": 0}


async def in_backoff(store: Store, subscription_id: str, now: datetime) -> bool:
    return (await delivery_state(store, subscription_id, now)).get("failing_since") is not None
