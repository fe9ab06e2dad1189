"""A store that fails for a while does not stop matching or delivery (DESIGN.md
"Background jobs ... live in the store": the matcher and delivery jobs keep their own
backoff instead of being given up, so an event recorded before or during an outage is
still delivered once the store answers again)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.subscriptions.conftest import Harness, criteria_subscription


async def test_matching_resumes_after_the_change_log_fails_for_a_while(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url, "Patient?family=smith"))
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    store = harness.app.state.store
    working = store.changes

    async def unavailable(*args: Any) -> Any:
        raise ConnectionError("the store is away")

    monkeypatch.setattr(store, "changes", unavailable)
    # Far more rounds than the JobRunner's own attempts (MAX_ATTEMPTS).
    for _ in range(20):
        await harness.later(timedelta(minutes=5))
    assert receiver.received == []
    monkeypatch.setattr(store, "changes", working)
    await harness.later(timedelta(minutes=5))
    assert len(receiver.received) == 1
