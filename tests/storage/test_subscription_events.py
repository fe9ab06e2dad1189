"""The subscription event log over the store's keyed records (subscriptions/events.py;
Backport IG `eventsSinceSubscriptionStart` numbering), on every backend: numbered 1,
2, 3 ... per subscription, recorded once per change even when the matcher runs twice
or two matchers race, read back in order from any number, expired after retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fhirserver.storage.base import Store
from fhirserver.subscriptions.events import Event, append_event, events_after, events_so_far

# In the future: MongoDB purges expired records by the real time.
NOW = datetime(2031, 1, 1, tzinfo=UTC)
KEEP = timedelta(days=7)


def _event(seq: int) -> Event:
    return Event(0, seq, "Patient", f"p{seq}", 1, "create", NOW)


async def test_events_are_numbered_per_subscription(store: Store) -> None:
    assert [await append_event(store, "a", _event(s), NOW, KEEP) for s in (3, 5, 9)] == [1, 2, 3]
    assert await append_event(store, "b", _event(5), NOW, KEEP) == 1
    assert await events_so_far(store, "a", NOW) == 3
    assert await events_so_far(store, "c", NOW) == 0
    found = await events_after(store, "a", 1, 10, NOW)
    assert [(e.number, e.seq, e.resource_id) for e in found] == [(2, 5, "p5"), (3, 9, "p9")]
    assert [e.number for e in await events_after(store, "a", 0, 2, NOW)] == [1, 2]


async def test_a_change_is_recorded_once(store: Store) -> None:
    assert await append_event(store, "a", _event(3), NOW, KEEP) == 1
    # The matcher ran over the same change again (a crash before it moved its cursor).
    assert await append_event(store, "a", _event(3), NOW, KEEP) is None
    assert await append_event(store, "a", _event(2), NOW, KEEP) is None
    assert await events_so_far(store, "a", NOW) == 1


async def test_two_matchers_racing_record_each_change_once(store: Store) -> None:
    async def matcher() -> list[int | None]:
        return [await append_event(store, "a", _event(s), NOW, KEEP) for s in range(1, 21)]

    first, second = await asyncio.gather(matcher(), matcher())
    assert sorted(n for n in first + second if n is not None) == list(range(1, 21))
    found = await events_after(store, "a", 0, 100, NOW)
    assert [e.seq for e in found] == list(range(1, 21))


async def test_events_past_retention_are_gone(store: Store) -> None:
    await append_event(store, "a", _event(1), NOW, KEEP)
    await append_event(store, "a", _event(2), NOW + timedelta(days=2), KEEP)
    later = NOW + timedelta(days=8)
    assert [e.seq for e in await events_after(store, "a", 0, 10, later)] == [2]
    assert await events_so_far(store, "a", later) == 2
