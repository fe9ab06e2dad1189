"""What a subscription is notified of: R4 `criteria` (a search, parsed with the same
parser as search and evaluated with the same in-memory matcher, search/match.py) or a
topic with its `backport-filter-criteria` filters (Backport IG "Subscription Filters")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fhirserver.errors import FHIRError, NotSupported
from fhirserver.resources.definitions import is_resource_type
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery
from fhirserver.subscriptions.topics import Topic


def parse_criteria_text(text: str, expression: str = "Subscription.criteria") -> SearchQuery:
    """`Type?name=value&...` as a strict search of one type; NotSupported (400) naming
    `expression` when it is not a search this server runs and can match in memory."""
    resource_type, _, query = text.strip().partition("?")
    if not is_resource_type(resource_type):
        raise NotSupported(
            f"{expression}: {resource_type or text!r} is not a resource type", expression=expression
        )
    try:
        parsed = parse_search(
            (resource_type,), parse_qsl(query, keep_blank_values=True), strict=True
        )
        # Chains and _has need other resources: the matcher refuses them, and so do we.
        matches(parsed, {"resourceType": resource_type})
    except FHIRError as exc:
        raise NotSupported(f"{expression}: {exc}", expression=expression) from None
    return parsed


def topic_filters(topic: Topic, filters: tuple[str, ...]) -> tuple[SearchQuery, ...]:
    """The filter queries of a topic subscription: each only on what the topic's
    `canFilterBy` allows (`Topic.filter_query`); NotSupported naming
    `Subscription.criteria` when one is not."""
    queries = []
    for text in filters:
        try:
            queries.append(topic.filter_query(text))
        except FHIRError as exc:
            raise NotSupported(
                f"Subscription.criteria: {exc}", expression="Subscription.criteria"
            ) from None
    return tuple(queries)


def find_topic(topics: Mapping[str, Topic], url: str) -> Topic:
    canonical = url.split("|")[0]
    if canonical not in topics:
        raise NotSupported(
            f"Subscription.criteria: {url!r} is not a topic of this server",
            expression="Subscription.criteria",
        )
    return topics[canonical]


def filters_pass(
    filters: tuple[SearchQuery, ...], resource_type: str, resource: Mapping[str, Any]
) -> bool:
    """Every filter on this resource type matches (filters on other types do not apply)."""
    return all(matches(f, dict(resource)) for f in filters if f.resource_type == resource_type)
