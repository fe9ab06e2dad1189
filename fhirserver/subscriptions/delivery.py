"""Delivery over rest-hook (R4 subscription.html "rest-hook"; Backport IG
"Notifications", "Handshake", "Heartbeat"), per subscription in event order, at least
once, retried with exponential backoff over the retry window, then `error`.

One subscription is delivered by one worker at a time (an expiring lock record with
an owner, lock.py: a worker whose lock ran out finds out before it writes, and stops);
different subscriptions are different jobs, which the JobRunner runs concurrently,
so a slow endpoint holds up only its own. Every delivery: the endpoint checked against
the allowed hosts after DNS resolution, `channel.header` values sent, a timeout, no
redirects followed (a 3xx is a failure).

R4 criteria subscriptions: one request per event; without `payload` an empty POST to
the endpoint, with `payload` a PUT of the resource to [endpoint]/[type]/[id] (a
deletion: an empty POST). Topic subscriptions: a notification Bundle of up to
`backport-max-count` events, POSTed to the endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Job, Store, UnitOfWork
from fhirserver.storage.retry import run_unit
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.endpoints import EndpointRefused, endpoint_host
from fhirserver.subscriptions.events import (
    Event,
    delivery_state,
    events_after,
    events_so_far,
    put_delivery_state,
)
from fhirserver.subscriptions.kinds import (
    DELIVER,
    DELIVERING,
    HANDSHAKE,
    MATCH,
    MATCH_KEY,
    RESTART,
)
from fhirserver.subscriptions.lock import LockLost, OwnedLock
from fhirserver.subscriptions.model import (
    REST_HOOK,
    SubscriptionSpec,
    header_pairs,
    read_subscription,
)
from fhirserver.subscriptions.notify import event_resource, notification
from fhirserver.subscriptions.signing import SIGNATURE_HEADER, is_signed, secret_for, signature
from fhirserver.subscriptions.status import current_subscription, set_status
from fhirserver.worker import Handler

logger = logging.getLogger("fhirserver.subscriptions")

FHIR_JSON = "application/fhir+json"
# The longest pause between two tries: an endpoint back up is noticed within it.
MAX_BACKOFF = timedelta(minutes=30)
# How long a delivery waits for a newly registered signing secret to be in place.
SECRET_WAIT = timedelta(seconds=1)
AGAIN_SOON = timedelta(milliseconds=100)
# How much of an endpoint's answer is read (its status is what counts).
MAX_ANSWER_BYTES = 4096


class DeliveryFailed(Exception):
    """The endpoint did not take the notification (the message says how, no secrets)."""


def retry_backoff(attempts: int) -> timedelta:
    """5 s, 10 s, 20 s ... capped at MAX_BACKOFF."""
    return min(timedelta(seconds=5 * 2 ** min(attempts, 20)), MAX_BACKOFF)


async def post(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    method: str,
    url: str,
    body: bytes | None,
    secret: str | None = None,
) -> None:
    """One request to the endpoint, after checking it is still allowed."""
    try:
        # The URL here; the host where the connection is made, against the addresses
        # connected to (transport.py: no second lookup for DNS rebinding to answer).
        endpoint_host(url)
    except EndpointRefused as exc:
        raise DeliveryFailed(str(exc)) from None
    headers = dict(header_pairs(spec.headers))
    if body is not None:
        headers["Content-Type"] = FHIR_JSON
    if secret is not None:
        headers[SIGNATURE_HEADER] = signature(secret, body or b"")
    try:
        # Backport IG `backport-timeout`: the subscriber's, if shorter than ours.
        limit = context.settings.timeout_seconds
        if spec.timeout_seconds:
            limit = min(limit, float(spec.timeout_seconds))
        # httpx's timeout is per read: the whole request is bounded too (an endpoint
        # dribbling its answer held the delivery and its lock as long as it liked).
        async with asyncio.timeout(limit):
            request = context.http.build_request(
                method, url, content=body or b"", headers=headers, timeout=limit
            )
            response = await context.http.send(request, stream=True)
            try:
                # The status is the answer: of the body, a few KB at most are read.
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES:
                        break
            finally:
                await response.aclose()
    except TimeoutError:
        raise DeliveryFailed(f"the endpoint took longer than {limit:g} s") from None
    except EndpointRefused as exc:
        raise DeliveryFailed(str(exc)) from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        # ValueError (UnicodeError among them): a header or URL stored before the write
        # rule refused it, which cannot be sent; a failure, not a crash retried for ever.
        raise DeliveryFailed(f"the endpoint could not be reached ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"the endpoint answered {response.status_code}")


async def send_events(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    events: Sequence[Event],
    secret: str | None = None,
) -> None:
    if spec.topic is not None:
        bundle = await notification(context, spec, "event-notification", events)
        await post(context, spec, "POST", spec.endpoint, orjson.dumps(bundle), secret)
        return
    for event in events:
        resource = await event_resource(context.store, event) if spec.payload else None
        if resource is None:
            await post(context, spec, "POST", spec.endpoint, None, secret)
        else:
            url = f"{spec.endpoint.rstrip('/')}/{event.resource_type}/{event.resource_id}"
            await post(context, spec, "PUT", url, orjson.dumps(resource), secret)


async def _reschedule(
    store: Store, kind: str, key: str, due: datetime, payload: bytes = b"{}"
) -> None:
    async def work(unit: UnitOfWork) -> None:
        await unit.put_job(Job(kind, key, due, payload))

    await run_unit(store, work)


async def _forget_failures(store: Store, subscription_id: str, now: datetime) -> None:
    """A new start: delivery goes on from where it got, with a new retry window."""
    state = await delivery_state(store, subscription_id, now)
    fresh = {**state, "failing_since": None, "attempts": 0, "last_sent": to_micros(now)}
    await put_delivery_state(store, subscription_id, fresh, now)


def _lock_time(context: SubscriptionContext) -> timedelta:
    """How long one subscription's delivery lock holds: one notification's time, twice."""
    return timedelta(seconds=2 * context.settings.timeout_seconds + 5)


async def deliver(
    context: SubscriptionContext, subscription_id: str, restart: bool = False
) -> None:
    """Deliver the subscription's undelivered events, oldest first; `restart`: the
    subscription was turned on again, earlier failures are forgotten."""
    store, now = context.store, context.clock()
    if restart:
        await _forget_failures(store, subscription_id, now)
    resource = await current_subscription(store, subscription_id)
    if resource is None:
        return
    spec = read_subscription(resource)
    if spec.status != "active" or spec.channel_type != REST_HOOK:
        return
    if spec.end is not None and spec.end <= now:
        await set_status(context, resource, "off", None)
        return
    ready, secret = await _signing(context, resource)
    if not ready:
        await _reschedule(store, DELIVER, subscription_id, now + SECRET_WAIT)
        return
    lock = OwnedLock(store, DELIVERING, subscription_id, _lock_time(context), context.clock)
    if not await lock.acquire():
        # Another worker delivers it, and looks for new events before it lets go. If
        # that worker died mid-delivery, nobody would: look again once its lock has
        # run out (a live holder leaves this run nothing to do).
        await _reschedule(store, DELIVER, subscription_id, now + _lock_time(context))
        return
    try:
        while await _deliver_some(context, spec, resource, secret, lock):
            pass
    except LockLost:
        # Our lock ran out mid-request and another worker took over: it delivers (and
        # sends the heartbeat) from here; we send nothing more.
        logger.warning("Subscription/%s: delivery lock lost to another worker", spec.id)
        return
    finally:
        await lock.release()
    state = await delivery_state(store, subscription_id, context.clock())
    behind = await events_so_far(store, subscription_id, context.clock()) > state["delivered"]
    if behind:
        if state.get("failing_since") is None:
            # Recorded while we held the lock, and its own run found the lock held. (A
            # moment later, not now: a run_due never spins on one job.)
            await _reschedule(store, DELIVER, subscription_id, context.clock() + AGAIN_SOON)
        # Else a failed delivery has its retry scheduled already.
        return
    await _heartbeat(context, spec, resource, secret)


async def _signing(
    context: SubscriptionContext, resource: dict[str, Any]
) -> tuple[bool, str | None]:
    """Whether delivery may go ahead, and the secret to sign with (None: unsigned). A
    signed channel whose secret is not in place yet (signing.py) waits."""
    if not is_signed(resource):
        return True, None
    secret = await secret_for(context.store, resource, context.clock())
    return secret is not None, secret


async def _deliver_some(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    resource: dict[str, Any],
    secret: str | None,
    lock: OwnedLock,
) -> bool:
    """One notification; whether to go on. Every write is made with the lock renewed
    just before (LockLost otherwise): a dead worker's lock runs out soon, and a worker
    whose lock ran out mid-request never steps back what its successor recorded."""
    await lock.keep()
    store, now = context.store, context.clock()
    state = await delivery_state(store, spec, now)
    delivered = int(state.get("delivered", 0))
    limit = spec.max_count if spec.topic is not None else 1
    # The count first, and only events up to it: an event is written before its count,
    # so each of these is there unless past retention. (Read after the events, a count
    # the matcher raised meanwhile made a new event look expired: skipped unsent.)
    total = await events_so_far(store, spec, now)
    if total <= delivered:
        return False
    events = await events_after(store, spec, delivered, min(limit, total - delivered), now)
    if not events:
        # Events past retention, never delivered: skipped (gone from $events too).
        skipped = {**state, "delivered": min(total, delivered + limit)}
        await put_delivery_state(store, spec, skipped, now)
        return True
    try:
        await send_events(context, spec, events, secret)
    except DeliveryFailed as exc:
        await lock.keep()
        await _record_failure(context, spec, resource, state, exc)
        return False
    await lock.keep()
    done = {
        "delivered": events[-1].number,
        "attempts": 0,
        "failing_since": None,
        "last_sent": to_micros(context.clock()),
    }
    await put_delivery_state(store, spec, done, now)
    return True


async def _record_failure(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    resource: dict[str, Any],
    state: dict[str, Any],
    exc: DeliveryFailed,
    heartbeat: bool = False,
) -> None:
    """A notification (an event's, or a heartbeat) the endpoint did not take: retried
    with backoff until the retry window has passed since the first failure, then
    `error` (R4 subscription.html)."""
    store, now = context.store, context.clock()
    since = state.get("failing_since") or to_micros(now)
    attempts = int(state.get("attempts", 0)) + 1
    failed = {**state, "failing_since": since, "attempts": attempts}
    await put_delivery_state(store, spec, failed, now, heartbeat_failed=heartbeat)
    if now - from_micros(since) >= context.settings.retry_window:
        failed_since = from_micros(since).isoformat()
        await set_status(context, resource, "error", f"delivery failed since {failed_since}: {exc}")
    else:
        logger.warning("Subscription/%s delivery failed (%s); retrying", spec.id, exc)
        await _reschedule(store, DELIVER, spec.id, now + retry_backoff(attempts))


async def _heartbeat(
    context: SubscriptionContext,
    spec: SubscriptionSpec,
    resource: dict[str, Any],
    secret: str | None,
) -> None:
    """Backport IG "Heartbeat": a topic subscription hears from us at least every period.
    Called with nothing left undelivered, so a failure on record is a heartbeat's: this
    run is its retry, sent now."""
    if spec.topic is None or not spec.heartbeat_seconds:
        return
    store, now = context.store, context.clock()
    state = await delivery_state(store, spec, now)
    failing = state.get("failing_since") is not None
    period = timedelta(seconds=spec.heartbeat_seconds)
    last = state.get("last_sent")
    due = (from_micros(int(last)) if last else now) + period
    if failing or (last and due <= now):
        try:
            bundle = await notification(context, spec, "heartbeat", ())
            await post(context, spec, "POST", spec.endpoint, orjson.dumps(bundle), secret)
        except DeliveryFailed as exc:
            failure = DeliveryFailed(f"heartbeat: {exc}")
            await _record_failure(context, spec, resource, state, failure, heartbeat=True)
            return
        sent = {**state, "last_sent": to_micros(now), "failing_since": None, "attempts": 0}
        await put_delivery_state(store, spec, sent, now)
        due = now + period
    elif not last:
        await put_delivery_state(store, spec, {**state, "last_sent": to_micros(now)}, now)
    await _reschedule(store, DELIVER, spec.id, due)


async def handshake(context: SubscriptionContext, job: Job) -> None:
    """Backport IG "Handshake": a `requested` topic rest-hook subscription becomes
    `active` once its endpoint took the handshake; retried over the window, then `error`."""
    store, now = context.store, context.clock()
    resource = await current_subscription(store, job.key)
    if resource is None:
        return
    spec = read_subscription(resource)
    if spec.status != "requested":
        return
    ready, secret = await _signing(context, resource)
    if not ready:
        await _reschedule(store, HANDSHAKE, job.key, now + SECRET_WAIT, job.payload)
        return
    try:
        bundle = await notification(context, spec, "handshake", ())
        await post(context, spec, "POST", spec.endpoint, orjson.dumps(bundle), secret)
    except DeliveryFailed as exc:
        since = int(orjson.loads(job.payload).get("failing_since") or to_micros(now))
        if now - from_micros(since) >= context.settings.retry_window:
            await set_status(context, resource, "error", f"handshake failed: {exc}")
            return
        payload = orjson.dumps({"failing_since": since, "attempts": job.attempts + 1})
        await _reschedule(store, HANDSHAKE, job.key, now + retry_backoff(job.attempts + 1), payload)
        return
    await set_status(context, resource, "active", None)
    await _forget_failures(store, spec.id, now)
    # The matcher stops when no subscription is active: this one starts it again.
    await _reschedule(store, MATCH, MATCH_KEY, now)
    # Events recorded while it waited for the handshake go out now; the delivery run
    # then schedules the heartbeat.
    await _reschedule(store, DELIVER, spec.id, now)


async def _again(context: SubscriptionContext, job: Job) -> None:
    due = context.clock() + retry_backoff(job.attempts + 1)
    with contextlib.suppress(Exception):

        async def work(unit: UnitOfWork) -> None:
            await unit.put_job(replace(job, due=due, attempts=job.attempts + 1))

        await run_unit(context.store, work)


def delivery_handlers(context: SubscriptionContext) -> dict[str, Handler]:
    # Neither fails into the JobRunner's own retries, which give a job up after a few
    # minutes: on an unexpected error (the store away) each tries again on its own
    # backoff; the retry window is kept by the delivery state.
    async def on_deliver(job: Job) -> None:
        try:
            await deliver(context, job.key, restart=job.payload == RESTART)
        except Exception:
            logger.exception("delivering Subscription/%s failed; trying again", job.key)
            await _again(context, job)

    async def on_handshake(job: Job) -> None:
        try:
            await handshake(context, job)
        except Exception:
            logger.exception("the handshake of Subscription/%s failed; trying again", job.key)
            await _again(context, job)

    return {DELIVER: on_deliver, HANDSHAKE: on_handshake}
