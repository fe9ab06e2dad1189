"""A websocket sends each event once, oldest first, even when the matcher records one
while the socket is reading the event log (Subscriptions Backport IG 1.1.0
"Notifications": events numbered by `eventsSinceSubscriptionStart`; R5
`subscription.html#channels` websocket), on every store.

The socket reads the count first and only the events up to it (as delivery.py does):
an event recorded between the two reads is above that count, so it is read by the next
poll, neither lost (as if past retention) nor sent twice."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import orjson

from fhirserver.auth.access import Access
from fhirserver.storage.base import Store
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.events import Event, append_event
from fhirserver.subscriptions.kinds import COUNT
from fhirserver.subscriptions.model import records_key
from fhirserver.subscriptions.source import StoreNotifications
from fhirserver.subscriptions.websocket import Limits, Session, SocketCounts, issue_token
from tests.subscriptions.conftest import Harness, topic_subscription
from tests.subscriptions.test_ws_access import Pipe

WAIT = 10.0
KEEP = timedelta(days=7)


class RecordingMidRead:
    """The store, where the next read of the subscription's event count is followed at
    once by the matcher recording another event: the reader has the old count."""

    def __init__(self, store: Store, records: str) -> None:
        self._store = store
        # The key of the subscription's records (`model.records_key`), not its id.
        self._records = records
        self.next_event: Event | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def get_record(self, kind: str, key: str, now: Any) -> dict[str, Any] | None:
        found = await self._store.get_record(kind, key, now)
        event, self.next_event = self.next_event, None
        if kind == COUNT and key == self._records and event is not None:
            await append_event(self._store, self._records, event, now, KEEP)
        else:
            self.next_event = event
        return found


def _event(seq: int, harness: Harness) -> Event:
    return Event(0, seq, "Encounter", f"e{seq}", 1, "create", harness.clock())


def _number(message: str) -> int:
    bundle = orjson.loads(message)
    status = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert status["type"]["valueCode"] in ("handshake", "event-notification")
    return int(status["events-since-subscription-start"]["valueString"])


async def test_an_event_recorded_between_the_count_and_the_events_is_sent_once(
    harness: Harness,
) -> None:
    sub = topic_subscription("http://127.0.0.1:9/unused")
    sub["channel"]["type"] = "websocket"
    sub["channel"].pop("endpoint")
    created = await harness.create(sub)
    sid = created["id"]
    store: Store = harness.app.state.store
    racing = RecordingMidRead(store, records_key(created))
    context: SubscriptionContext = harness.app.state.subscriptions
    source = StoreNotifications(replace(context, store=cast(Store, racing)))
    token, _ = await issue_token(
        store, (records_key(created),), Access.everything(), harness.clock(), timedelta(minutes=5)
    )
    pipe = Pipe()
    session = Session(
        connection=pipe,
        source=source,
        store=store,
        clock=harness.clock,
        counts=SocketCounts(),
        authorization=False,
        limits=Limits(poll_seconds=0.01),
    )
    task = asyncio.create_task(session.run())
    try:
        await pipe.inbox.put(f"bind-with-token {token}")
        assert _number(await asyncio.wait_for(pipe.sent.get(), WAIT)) == 0
        sent: list[int] = []
        for first in (1, 3, 5):
            # Event `first` is in the log; `first + 1` is recorded just after the
            # socket's next read of the count.
            await append_event(store, sid, _event(first, harness), harness.clock(), KEEP)
            racing.next_event = _event(first + 1, harness)
            sent += [_number(await asyncio.wait_for(pipe.sent.get(), WAIT)) for _ in range(2)]
            assert racing.next_event is None
        assert sent == [1, 2, 3, 4, 5, 6]
        # Nothing more: none sent twice.
        await asyncio.sleep(0.2)
        assert pipe.sent.empty()
    finally:
        await pipe.inbox.put(None)
        await asyncio.wait_for(task, WAIT)
