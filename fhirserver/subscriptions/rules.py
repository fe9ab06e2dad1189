"""The Subscription resource's write rule (R4 subscription.html; Backport IG
"Subscriptions on R4"): runs inside the write's unit of work (interactions/rules.py).

A client's write must name a search the server supports as `criteria` (or, with the
backport-subscription profile, a topic of this server with allowed filters), a
`rest-hook` or `websocket` channel, an allowed `http(s)` endpoint for a rest-hook.
The server owns `status`: a client creates with `requested` (or `active`, taken as
`requested`) and may set `off`; `error` is the server's. A criteria subscription, or a
topic one on a websocket (the handshake is on bind), is accepted at once (`active`); a
topic rest-hook one becomes `active` after a successful handshake (Backport IG
"Handshake"); one whose endpoint, payload or headers change is `requested` and
handshaken again. A client turning on one in `error` does not give it a new retry
window unprobed: a topic rest-hook one is `requested` (a handshake), a criteria one
`active` with its failed delivery tried once more within the old window. An `end`
already past turns the subscription `off`. The
`subscription-signed` mark (signing.py) comes only with a registered secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from fhirserver.errors import Issue, Unprocessable
from fhirserver.interactions.rules import Actor, Change, WriteRule
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Job, UnitOfWork
from fhirserver.subscriptions.context import SubscriptionSettings
from fhirserver.subscriptions.criteria import find_topic, parse_criteria_text, topic_filters
from fhirserver.subscriptions.endpoints import EndpointRefused, check_endpoint
from fhirserver.subscriptions.kinds import DELIVER, HANDSHAKE, MATCH, MATCH_KEY, RESTART
from fhirserver.subscriptions.model import (
    HEARTBEAT_PERIOD,
    INCARNATION,
    MAX_COUNT,
    MAX_EVENTS_PER_NOTIFICATION,
    MIN_HEARTBEAT_SECONDS,
    REST_HOOK,
    TIMEOUT,
    WEBSOCKET,
    channel_extension,
    header_problem,
    incarnation_of,
    positive_int,
    read_subscription,
    records_key,
)
from fhirserver.subscriptions.signing import SIGNED, is_signed, secret_job, take_secret
from fhirserver.subscriptions.topics import Topic
from fhirserver.subscriptions.visibility import owner_after

# R4 payload types a rest-hook may ask for: JSON is what this server writes.
_PAYLOADS = ("application/fhir+json", "application/json", "application/json+fhir")
_CLIENT_STATUSES = ("requested", "active", "off")


def _refuse(text: str, expression: str) -> Unprocessable:
    return Unprocessable(text, issues=[Issue(text, "business-rule", "error", expression)])


def _check_channel_extensions(resource: JSONObject) -> None:
    """Backport IG: heartbeat period and timeout are unsignedInt seconds, max-count a
    positiveInt; zero, negative or non-integer values are refused, a heartbeat period
    below the minimum (a zero one rescheduled itself in the past: a flood), and a
    max-count above what one notification carries here."""
    lowest = {HEARTBEAT_PERIOD: MIN_HEARTBEAT_SECONDS, TIMEOUT: 1, MAX_COUNT: 1}
    highest = {MAX_COUNT: MAX_EVENTS_PER_NOTIFICATION}
    for url, least in lowest.items():
        value = channel_extension(resource, url)
        if value is None:
            continue
        most = highest.get(url)
        if not positive_int(value) or value < least or (most is not None and value > most):
            name = url.rsplit("/", 1)[-1]
            bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
            raise _refuse(
                f"{name} must be a whole number {bounds}, not {value!r}",
                f"Subscription.channel.extension('{url}')",
            )


def _check_headers(resource: JSONObject) -> None:
    """R4 `channel.header`: HTTP headers sent with each notification; those that would
    override what the server sets (Host, the signature) or cannot be sent are refused."""
    channel = resource.get("channel")
    headers = channel.get("header", []) if isinstance(channel, dict) else []
    for index, header in enumerate(headers if isinstance(headers, list) else []):
        problem = header_problem(str(header))
        if problem is not None:
            raise _refuse(
                f"channel.header[{index}] {problem}", f"Subscription.channel.header[{index}]"
            )


def _check(
    resource: JSONObject, settings: SubscriptionSettings, topics: Mapping[str, Topic]
) -> None:
    _check_channel_extensions(resource)
    spec = read_subscription(resource)
    if spec.channel_type not in (REST_HOOK, WEBSOCKET):
        raise _refuse(
            f"channel type {spec.channel_type!r} is not served here (rest-hook, websocket)",
            "Subscription.channel.type",
        )
    if spec.topic is not None:
        topic_filters(find_topic(topics, spec.topic), spec.filters)
    else:
        parse_criteria_text(spec.criteria or "")
    if spec.channel_type == REST_HOOK:
        try:
            check_endpoint(spec.endpoint, settings.allowed)
        except EndpointRefused as exc:
            raise _refuse(str(exc), "Subscription.channel.endpoint") from None
        if spec.payload and spec.payload.split(";")[0].strip() not in _PAYLOADS:
            raise _refuse(
                f"payload {spec.payload!r} is not served here (application/fhir+json)",
                "Subscription.channel.payload",
            )


def _check_signed(current: JSONObject | None, new: JSONObject, secret: str | None) -> None:
    """The SIGNED mark comes with a secret, or stays on a channel that has one. Refused
    rather than dropped: a client that believes its notifications are signed while they
    are not would reject every one of them (or, marked, they would wait for ever)."""
    if is_signed(new) and secret is None and not (current is not None and is_signed(current)):
        raise _refuse(
            f"a channel is signed by registering a secret (channel.header "
            f"'X-Subscription-Secret: ...'), not by the extension {SIGNED} alone",
            f"Subscription.channel.extension('{SIGNED}')",
        )


def _receives(resource: JSONObject) -> tuple[object, ...]:
    """What a rest-hook endpoint receives, and where: a change needs a new handshake."""
    spec = read_subscription(resource)
    return (spec.endpoint, spec.payload, spec.content, spec.headers)


def _status(
    current: JSONObject | None, new: JSONObject, topic_rest_hook: bool, now: datetime
) -> str:
    asked = str(new.get("status", ""))
    was = str(current.get("status", "")) if current is not None else None
    # Backport IG "Handshake": the handshake is with an endpoint, for what it receives;
    # a subscription that points elsewhere, or sends something else, is `requested` again.
    retargeted = topic_rest_hook and current is not None and _receives(current) != _receives(new)
    if asked == was and asked in ("active", "error") and not retargeted:
        return asked  # a client writing back what it read
    if asked == was == "error":
        return "requested"  # retargeted: the new endpoint is tried
    if asked not in _CLIENT_STATUSES:
        raise _refuse(
            f"a client may set status requested, active or off, not {asked!r}",
            "Subscription.status",
        )
    spec = read_subscription(new)
    if asked == "off" or (spec.end is not None and spec.end <= now):
        return "off"
    return "requested" if topic_rest_hook else "active"


async def _schedule(
    unit: UnitOfWork,
    subscription_id: str,
    status: str,
    topic_rest_hook: bool,
    was: str | None,
    now: datetime,
) -> None:
    if status == "requested" and topic_rest_hook:
        await unit.put_job(Job(HANDSHAKE, subscription_id, now))
    if status == "active" and was == "off":
        # Turned on again: delivery starts afresh (a new retry window) where it stopped.
        await unit.put_job(Job(DELIVER, subscription_id, now, RESTART))
    if status == "active" and was == "error":
        # R4 "status": the server decides `active`; a criteria subscription has no
        # handshake, so the probe is the delivery that failed, tried once within the
        # old window: failing again, it is in error again at once, not retried for a
        # new window (a topic rest-hook one is `requested` and handshaken instead).
        await unit.put_job(Job(DELIVER, subscription_id, now))
    if status != "off":
        # The matcher runs while there are subscriptions; a new one starts it again.
        await unit.put_job(Job(MATCH, MATCH_KEY, now))


def _with_incarnation(resource: JSONObject, current: JSONObject | None) -> JSONObject:
    """The resource with its incarnation (model.INCARNATION): the current one's on an
    update, whatever the client sent, a new one on a create (none stored: after a
    delete). The server makes it; one created before incarnations keeps having none."""
    incarnation = incarnation_of(current) if current is not None else uuid.uuid4().hex
    extensions = [e for e in resource.get("extension", []) if e.get("url") != INCARNATION]
    if incarnation:
        extensions.append({"url": INCARNATION, "valueString": incarnation})
    amended = {k: v for k, v in resource.items() if k != "extension"}
    if extensions:
        amended["extension"] = extensions
    return amended


def subscription_rules(
    settings: SubscriptionSettings, topics: Mapping[str, Topic]
) -> Mapping[str, WriteRule]:
    async def subscription(change: Change) -> JSONObject | None:
        new = change.new
        if new is None:
            current = change.current or {}
            subscription_id = str(current.get("id", ""))
            await change.unit.drop_job(HANDSHAKE, subscription_id)
            await change.unit.drop_job(DELIVER, subscription_id)
            # Its secret goes with it; its events expire (a new one has other records).
            await change.unit.put_job(secret_job(records_key(current), None, change.now))
            return None
        if change.actor is Actor.SERVER:
            return None
        _check(new, settings, topics)
        new, secret = take_secret(new)
        _check_headers(new)
        _check_signed(change.current, new, secret)
        new = _with_incarnation(new, change.current)
        if secret is not None:
            if not secret:
                raise _refuse("the signing secret is empty", "Subscription.channel.header")
            await change.unit.put_job(secret_job(records_key(new), secret, change.now))
        spec = read_subscription(new)
        topic_rest_hook = spec.topic is not None and spec.channel_type == REST_HOOK
        status = _status(change.current, new, topic_rest_hook, change.now)
        amended = owner_after(change.current, dict(new), change.access)
        amended["status"] = status
        if status != "error":
            amended.pop("error", None)
        was = str(change.current.get("status")) if change.current else None
        subscription_id = str(new.get("id", ""))
        await _schedule(change.unit, subscription_id, status, topic_rest_hook, was, change.now)
        return amended

    return {"Subscription": subscription}
