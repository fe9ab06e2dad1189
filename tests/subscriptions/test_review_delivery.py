"""Review findings on delivery (R4 subscription.html "rest-hook"; DESIGN.md "Side
effects and external calls": an event recorded is delivered, at least once)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from fhirserver.subscriptions import delivery, events, matcher
from fhirserver.subscriptions.model import SubscriptionSpec, read_subscription
from tests.subscriptions.conftest import Harness, criteria_subscription


async def test_a_crash_between_recording_and_scheduling_loses_no_delivery(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review bug #3: the matcher records the event, then dies before it writes the
    DELIVER job; the redo finds the event recorded already and must still schedule it."""
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url + "/hook", "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    real = matcher.in_backoff
    crashes = [True]

    async def crash_once(*args: object) -> bool:
        if crashes:
            crashes.pop()
            raise RuntimeError("killed after recording")
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(matcher, "in_backoff", crash_once)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs(rounds=1)
    assert not crashes, "the matcher did not get to the crash"
    assert receiver.received == []
    await harness.later(timedelta(minutes=1))
    assert [(r.method, r.path) for r in receiver.received] == [("POST", "/hook")]


async def test_an_event_whose_count_lands_mid_delivery_is_sent_not_skipped(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flaky test_two_runners_racing_deliver_each_event_once: the matcher writes an
    event, then its count; a delivery that read the old count for its events and the
    new one for its "events past retention" check skipped the event unsent."""
    receiver = harness.receiver
    await harness.create(criteria_subscription(receiver.url + "/hook", "Patient?family=smith"))
    await harness.run_jobs(rounds=1)
    real_note, real_count = events._note_count, events.events_so_far
    deferred: list[tuple[Any, ...]] = []
    state = {"defer": True, "delivering": False}

    async def note_later(*args: Any) -> None:
        if state["defer"]:
            state["defer"] = False
            deferred.append(args)
            return
        await real_note(*args)

    async def count_then_land(*args: Any) -> int:
        # The count as it was, and the matcher's count write right after that read.
        got = await real_count(*args)
        if state["delivering"] and deferred:
            await real_note(*deferred.pop())
        return got

    real_deliver = delivery.deliver

    async def delivering(*args: Any, **kwargs: Any) -> None:
        state["delivering"] = True
        await real_deliver(*args, **kwargs)

    monkeypatch.setattr(events, "_note_count", note_later)
    monkeypatch.setattr(events, "events_so_far", count_then_land)
    monkeypatch.setattr(delivery, "events_so_far", count_then_land)
    monkeypatch.setattr(delivery, "deliver", delivering)
    await harness.create({"resourceType": "Patient", "name": [{"family": "smith"}]})
    await harness.run_jobs()
    assert not deferred
    await harness.later(timedelta(seconds=5))
    assert [(r.method, r.path) for r in receiver.received] == [("POST", "/hook")]


@pytest.mark.parametrize(
    "header", ["X-Tenant: clinic-\u00e9", "X-Tenant: a\u2028b", "X-T\u00e9nant: a"]
)
async def test_a_header_that_cannot_be_sent_is_a_delivery_failure(
    harness: Harness, header: str
) -> None:
    """Review bug #6: a `channel.header` stored before the write check that httpx cannot
    encode is a failed delivery (retried, then `error`), not an endless crash-retry."""
    resource = criteria_subscription(harness.receiver.url, "Patient?family=smith", header=[header])
    spec = read_subscription({**resource, "id": "x"})
    context = harness.app.state.subscriptions
    with pytest.raises(delivery.DeliveryFailed):
        await delivery.post(context, spec, "POST", spec.endpoint, None)
    assert harness.receiver.received == []


async def test_stored_reserved_headers_are_not_sent(harness: Harness) -> None:
    """Review bug #6: neither Host nor the signature can be set by `channel.header`."""
    headers = ["Host: evil.example", "x-signature: sha256=forged", "X-Tenant: a"]
    resource = criteria_subscription(harness.receiver.url, "Patient?family=smith", header=headers)
    spec = read_subscription({**resource, "id": "x"})
    context = harness.app.state.subscriptions
    await delivery.post(context, spec, "POST", spec.endpoint, None)
    [got] = harness.receiver.received
    assert got.headers["host"] != "evil.example"
    assert "x-signature" not in got.headers
    assert got.headers["x-tenant"] == "a"


@asynccontextmanager
async def _raw_endpoint(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await reader.read(65536)
            await handle(reader, writer)
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


def _timeout_spec(url: str, seconds: int) -> SubscriptionSpec:
    resource = criteria_subscription(url, "Patient?family=smith")
    timeout = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout"
    resource["channel"]["extension"] = [{"url": timeout, "valueUnsignedInt": seconds}]
    return read_subscription({**resource, "id": "x"})


async def test_an_endpoint_dribbling_its_answer_is_cut_off_at_the_timeout(
    harness: Harness,
) -> None:
    """Review bug #2: httpx's timeout is per read, so an endpoint sending a byte now and
    then held the delivery (and its lock) as long as it liked; the whole request is
    bounded by the timeout."""

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)

    async with _raw_endpoint(dribble) as url:
        context = harness.app.state.subscriptions
        started = time.monotonic()
        async with asyncio.timeout(8):
            with pytest.raises(delivery.DeliveryFailed):
                await delivery.post(context, _timeout_spec(url, 1), "POST", url, None)
        assert time.monotonic() - started < 3


async def test_a_huge_answer_is_not_read(harness: Harness) -> None:
    """Review bug #2: the answer's status is what counts; its body is read no further
    than a few KB (an endpoint could send gigabytes into memory)."""
    sent = [0]

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        chunk = b"y" * 4096
        while True:
            writer.write(chunk)
            await writer.drain()
            sent[0] += len(chunk)
            await asyncio.sleep(0.01)

    async with _raw_endpoint(endless) as url:
        context = harness.app.state.subscriptions
        async with asyncio.timeout(8):
            await delivery.post(context, _timeout_spec(url, 5), "POST", url, None)
        assert sent[0] < 1_000_000
