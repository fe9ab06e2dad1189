"""A Subscription resource read into what the engine needs (R4 subscription.html;
Subscriptions R5 Backport IG 1.1.0 "Subscriptions on R4": the topic canonical in
`criteria`, filters in `_criteria.extension`, channel settings in `channel`
extensions, payload content in `_payload.extension`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhirserver.auth.access import Access
from fhirserver.search.time import date_range
from fhirserver.subscriptions.visibility import owner_of

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
BACKPORT_PROFILE = BACKPORT + "backport-subscription"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
# The most events one notification carries, whatever `backport-max-count` asks (as
# `$events` returns at most 100): a backlog is sent in Bundles that can be built and
# sent within the timeout.
MAX_EVENTS_PER_NOTIFICATION = 100

# The server's mark of one incarnation of a subscription, stamped by the write rule
# (rules.py) when the subscription is created (again, after a delete): a subscription
# created again under its id is a new one, its records (events, count, delivery state,
# secret) under a key of their own, so that its numbering starts at 1 (Backport IG
# "Notification events") and the old records just expire.
INCARNATION = "http://fhirserver.dev/fhir/StructureDefinition/subscription-incarnation"

REST_HOOK, WEBSOCKET = "rest-hook", "websocket"
# `channel.header` names the server sets itself (the signature: signing.py), never the
# subscriber's: a Host would redirect the request, the others forge or break it.
RESERVED_HEADERS = frozenset(
    {"host", "x-signature", "content-type", "content-length", "transfer-encoding", "connection"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
# The shortest heartbeat period served: a subscriber's shorter one is refused on write.
MIN_HEARTBEAT_SECONDS = 10


@dataclass(frozen=True)
class SubscriptionSpec:
    id: str
    status: str
    # R4 criteria (a search such as `Observation?code=1234-5`), or None for a topic.
    criteria: str | None
    topic: str | None
    filters: tuple[str, ...]
    channel_type: str
    endpoint: str
    # `channel.header` values, each "Name: value".
    headers: tuple[str, ...]
    # `channel.payload`: the MIME type, or None (R4: no payload, an empty POST).
    payload: str | None
    # Backport IG payload content: empty | id-only | full-resource.
    content: str
    heartbeat_seconds: int | None
    timeout_seconds: int | None
    max_count: int
    end: datetime | None
    error: str | None
    # The key of this incarnation's records (records_key).
    key: str
    # Who is notified (visibility.py): what the notifications may show.
    owner: Access = field(default_factory=Access.everything)

    @property
    def is_topic(self) -> bool:
        return self.topic is not None


def _extensions(element: Any) -> list[dict[str, Any]]:
    if not isinstance(element, dict):
        return []
    found = element.get("extension", [])
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def _values(element: Any, url: str) -> list[Any]:
    return [
        value
        for e in _extensions(element)
        if e.get("url") == url
        for key, value in e.items()
        if key.startswith("value")
    ]


def _first(element: Any, url: str) -> Any:
    values = _values(element, url)
    return values[0] if values else None


def positive_int(value: Any) -> bool:
    """A JSON integer above zero (a boolean is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def channel_extension(resource: dict[str, Any], url: str) -> Any:
    """The value of one `channel` extension, or None."""
    return _first(resource.get("channel") or {}, url)


def is_backport(resource: dict[str, Any]) -> bool:
    profiles = resource.get("meta", {}).get("profile", [])
    return BACKPORT_PROFILE in profiles if isinstance(profiles, list) else False


def read_subscription(resource: dict[str, Any]) -> SubscriptionSpec:
    channel = resource.get("channel") or {}
    criteria = str(resource.get("criteria", ""))
    topic = criteria if is_backport(resource) else None
    payload = channel.get("payload")
    content = _first(channel.get("_payload"), PAYLOAD_CONTENT)
    heartbeat = _first(channel, HEARTBEAT_PERIOD)
    timeout = _first(channel, TIMEOUT)
    max_count = _first(channel, MAX_COUNT)
    end = resource.get("end")
    return SubscriptionSpec(
        id=str(resource.get("id", "")),
        status=str(resource.get("status", "")),
        criteria=None if topic else criteria,
        topic=topic,
        filters=tuple(str(v) for v in _values(resource.get("_criteria"), FILTER_CRITERIA)),
        channel_type=str(channel.get("type", "")),
        endpoint=str(channel.get("endpoint", "")),
        headers=tuple(str(h) for h in channel.get("header", [])),
        payload=str(payload) if payload else None,
        # Without the extension: `empty` when there is no payload type, else id-only.
        content=str(content) if content else ("id-only" if payload else "empty"),
        # Stored before the write rule checked them: never a period below the minimum
        # (nor in the past), never a timeout of zero.
        heartbeat_seconds=(
            max(heartbeat, MIN_HEARTBEAT_SECONDS) if positive_int(heartbeat) else None
        ),
        timeout_seconds=timeout if positive_int(timeout) else None,
        max_count=min(max_count, MAX_EVENTS_PER_NOTIFICATION) if positive_int(max_count) else 1,
        end=date_range(str(end), "end")[0] if end else None,
        error=str(resource["error"]) if resource.get("error") else None,
        key=records_key(resource),
        owner=owner_of(resource),
    )


def incarnation_of(resource: dict[str, Any]) -> str | None:
    found = _first(resource, INCARNATION)
    return str(found) if found else None


def records_key(resource: dict[str, Any]) -> str:
    """The key of the subscription's records: its id and incarnation (the id alone for
    one stored before incarnations were stamped, whose records are under it)."""
    incarnation = incarnation_of(resource)
    subscription_id = str(resource.get("id", ""))
    # "@" is not in an id ([A-Za-z0-9\-.]{1,64}): no key is another's.
    return f"{subscription_id}@{incarnation}" if incarnation else subscription_id


def header_problem(header: str) -> str | None:
    """Why a `channel.header` value ("Name: value") may not be sent, or None."""
    name, colon, value = header.partition(":")
    name = name.strip()
    if not colon or not _HEADER_NAME.fullmatch(name):
        return 'is not a "Name: value" header'
    if name.lower() in RESERVED_HEADERS:
        return f"sets {name}, which the server sets itself"
    if not _HEADER_VALUE.fullmatch(value):
        return "has a value that is not printable ASCII"
    return None


def header_pairs(headers: tuple[str, ...]) -> list[tuple[str, str]]:
    """`channel.header` values ("Name: value") as pairs; malformed ones and the names
    the server sets itself (stored before the write rule refused them) left out."""
    pairs = []
    for header in headers:
        name, colon, value = header.partition(":")
        if colon and name.strip() and name.strip().lower() not in RESERVED_HEADERS:
            pairs.append((name.strip(), value.strip()))
    return pairs
