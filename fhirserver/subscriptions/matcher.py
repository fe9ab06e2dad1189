"""Matching from the change log (DESIGN.md "Storage": the change log is the source for
Subscriptions; "Side effects and external calls"): a job that, under an owned lock so
that one matcher runs at a time across processes, reads `Store.changes` from its cursor,
evaluates each change against the active subscriptions with the in-memory matcher
(search/match.py) or the topic's triggers, records each matching event in the
subscription's event log (events.py) and schedules its delivery, then moves the cursor.

A crash anywhere redoes at most one batch, and recording is idempotent per
(subscription, change): nothing is lost, nothing recorded twice. The job re-schedules
itself while there are active subscriptions; a Subscription write starts it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from fhirserver.errors import FHIRError
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery
from fhirserver.storage.base import Job, Store, UnitOfWork, Version
from fhirserver.storage.retry import run_unit
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.criteria import (
    filters_pass,
    find_topic,
    parse_criteria_text,
    topic_filters,
)
from fhirserver.subscriptions.events import Event, append_event, in_backoff
from fhirserver.subscriptions.kinds import CURSOR, DELIVER, MATCH, MATCH_KEY, MATCHING
from fhirserver.subscriptions.lock import LockLost, OwnedLock
from fhirserver.subscriptions.model import SubscriptionSpec, read_subscription
from fhirserver.subscriptions.status import set_status
from fhirserver.subscriptions.topics import CREATE, DELETE, UPDATE, Topic
from fhirserver.subscriptions.visibility import visible_to_subscriber
from fhirserver.worker import Handler, backoff

logger = logging.getLogger("fhirserver.subscriptions")

BATCH = 500
# The longest pause between tries after an error.
MAX_BACKOFF = timedelta(minutes=5)
# The pause between looks at the change log while subscriptions are active.
POLL = timedelta(seconds=1)
# How long the matcher's lock holds past its last renewal: the longest stretch without
# a write (reading the active subscriptions, one change and its previous version), with
# room. A dead matcher's lock passes on after it: after a crash, matching waits this long.
LOCK_TIME = timedelta(seconds=10)


@dataclass(frozen=True)
class _Active:
    spec: SubscriptionSpec
    resource: dict[str, Any]
    # Changes at or below this position came before the subscription existed.
    start_seq: int
    criteria: SearchQuery | None
    topic: Topic | None
    filters: tuple[SearchQuery, ...]


def _body(version: Version | None) -> dict[str, Any] | None:
    if version is None or version.body is None:
        return None
    body: dict[str, Any] = orjson.loads(version.body)
    return body


# The statuses a subscription is matched in: `active`, and `requested` (a topic
# rest-hook waiting for its handshake keeps its events, delivered once it is active).
MATCHED_STATUSES = ("requested", "active")


async def _active(store: Store, topics: Mapping[str, Topic]) -> list[_Active]:
    query = parse_search(("Subscription",), [("status", ",".join(MATCHED_STATUSES))])
    query = dataclasses.replace(query, count=BATCH)
    found: list[_Active] = []
    while True:
        page = await store.search(query)
        for version in page.matches:
            resource = _body(version)
            if resource is None:
                continue
            start = await _start_seq(store, version)
            try:
                found.append(_prepare(resource, start, topics))
            except FHIRError:  # no longer valid here (its topic gone): skipped
                continue
        if page.next_cursor is None:
            return found
        query = dataclasses.replace(query, cursor=page.next_cursor)


async def _start_seq(store: Store, version: Version) -> int:
    """Where the subscription's current run began: the oldest of its latest versions that
    are all matched (requested or active), going back no further than a deletion (a
    re-creation is a new subscription) or an `off` / `error` version (R4
    subscription.html: nothing is notified while off; turned on again, it counts from
    then). Changes at or below it came before."""
    start = version
    while start.version > 1:
        previous = await store.vread("Subscription", start.id, start.version - 1)
        body = _body(previous)
        if previous is None or body is None or body.get("status") not in MATCHED_STATUSES:
            break
        start = previous
    return start.seq


def _prepare(resource: dict[str, Any], start_seq: int, topics: Mapping[str, Topic]) -> _Active:
    spec = read_subscription(resource)
    if spec.topic is not None:
        topic = find_topic(topics, spec.topic)
        return _Active(spec, resource, start_seq, None, topic, topic_filters(topic, spec.filters))
    return _Active(spec, resource, start_seq, parse_criteria_text(spec.criteria or ""), None, ())


def _interaction(change: Version, previous: dict[str, Any] | None) -> str:
    if change.deleted:
        return DELETE
    return CREATE if previous is None else UPDATE


def _matches(
    sub: _Active,
    change: Version,
    interaction: str,
    previous: dict[str, Any] | None,
    current: dict[str, Any] | None,
) -> bool:
    if sub.topic is not None:
        if not sub.topic.triggered(change.resource_type, interaction, previous, current):
            return False
        state = current if current is not None else previous
        return state is not None and filters_pass(sub.filters, change.resource_type, state)
    assert sub.criteria is not None
    if change.resource_type != sub.criteria.resource_type:
        return False
    # R4 leaves deletions open: a deletion is an event when the version before matched.
    state = current if current is not None else previous
    return state is not None and matches(sub.criteria, state)


async def _start_cursor(store: Store, subs: list[_Active]) -> int:
    """Where a matcher that never ran starts: before the oldest active subscription (its
    creation), else at the head of the log (older history notifies nobody)."""
    if subs:
        return min(sub.start_seq for sub in subs)
    return await store.settled_seq()


async def match_changes(context: SubscriptionContext) -> bool:
    """Handle one batch of the change log, if no other matcher is at it; whether there
    is more to do now."""
    store = context.store
    # The job's lease is not enough: a Subscription write puts the MATCH job again (a
    # new subscription starts the matcher), and the job put again is free to claim
    # while a matcher still runs the one it replaced.
    lock = OwnedLock(store, MATCHING, MATCH_KEY, LOCK_TIME, context.clock)
    if not await lock.acquire():
        # The running matcher may have read the active subscriptions before the write
        # that put this job: look again once it is done.
        await _look_again(store, context.clock() + POLL)
        return False
    try:
        return await _match_batch(context, lock)
    except LockLost:
        # Ours ran out (a pause) and another matcher took over from our cursor: it
        # records what we did not (recording is idempotent) and schedules itself.
        logger.warning("the subscription matcher's lock was lost to another matcher")
        return False
    finally:
        await lock.release()


async def _look_again(store: Store, due: datetime) -> None:
    async def work(unit: UnitOfWork) -> None:
        await unit.put_job(Job(MATCH, MATCH_KEY, due))

    await run_unit(store, work)


async def _match_batch(context: SubscriptionContext, lock: OwnedLock) -> bool:
    """One batch, every write made with the lock renewed just before (LockLost if it
    is no longer ours): a matcher whose lock ran out never writes beside its successor."""
    store, now = context.store, context.clock()
    subs = await _active(store, context.topics)
    await lock.keep()
    # R4 `end`: past it, no more events and the subscription is `off`.
    for ended in [s for s in subs if s.spec.end is not None and s.spec.end <= now]:
        await set_status(context, ended.resource, "off", None)
    cursor_record = await store.get_record(CURSOR, MATCH_KEY, now)
    cursor = int(cursor_record["seq"]) if cursor_record else await _start_cursor(store, subs)
    changes = await store.changes(cursor, BATCH)
    touched: dict[str, SubscriptionSpec] = {}
    for change in changes:
        relevant = [
            s
            for s in subs
            if change.seq > s.start_seq and (s.spec.end is None or change.last_updated < s.spec.end)
        ]
        if not relevant:
            continue
        current = _body(change)
        previous = None
        if change.version > 1:
            previous = _body(await store.vread(change.resource_type, change.id, change.version - 1))
        interaction = _interaction(change, previous)
        kept = False
        for sub in relevant:
            try:
                matched = _matches(sub, change, interaction, previous, current)
            except FHIRError:
                # A criterion this resource cannot be tested with: not an event.
                logger.warning("Subscription/%s could not test a change", sub.spec.id)
                matched = False
            if not matched:
                continue
            if not visible_to_subscriber(sub.resource, change):
                continue
            event = Event(
                0,
                change.seq,
                change.resource_type,
                change.id,
                change.version,
                interaction,
                change.last_updated,
            )
            if not kept:
                await lock.keep()
                kept = True
            # Scheduled also when recorded already (None): a matcher that died between
            # recording and scheduling left it recorded but undelivered.
            # Under the incarnation read with the subscription: one deleted and made
            # again meanwhile does not get this one's events.
            await append_event(store, sub.spec, event, now, context.settings.retention)
            touched[sub.spec.id] = sub.spec
    # A subscription in backoff keeps its retry time: the retry delivers the new events.
    due = [i for i, spec in sorted(touched.items()) if not await in_backoff(store, spec, now)]
    await lock.keep()
    if due:

        async def work(unit: UnitOfWork) -> None:
            for subscription_id in due:
                await unit.put_job(Job(DELIVER, subscription_id, now))

        await run_unit(store, work)
    if changes:
        await store.put_record(CURSOR, MATCH_KEY, {"seq": changes[-1].seq}, None)
    elif cursor_record is None:
        await store.put_record(CURSOR, MATCH_KEY, {"seq": cursor}, None)
    more = len(changes) == BATCH
    if subs or more:
        await _look_again(store, now if more else now + POLL)
    return more


def match_handler(context: SubscriptionContext) -> Handler:
    """The MATCH job. It never fails into the JobRunner's own retries (which give a job
    up after a few minutes): on an error (the store away) it looks again after a
    backoff of its own, for as long as it takes."""

    async def run(job: Job) -> None:
        try:
            await match_changes(context)
        except Exception:
            logger.exception("matching subscriptions failed; trying again")
            due = context.clock() + min(backoff(job.attempts + 1), MAX_BACKOFF)
            with contextlib.suppress(Exception):

                async def work(unit: UnitOfWork) -> None:
                    await unit.put_job(Job(MATCH, MATCH_KEY, due, attempts=job.attempts + 1))

                await run_unit(context.store, work)

    return run
