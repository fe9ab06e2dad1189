"""Subscription topics (Subscriptions R5 Backport IG 1.1.0 "Topics"; R5
subscriptiontopic.html): what a topic-based subscription is notified of.

A topic names the resource changes it is about (`resourceTrigger`: the type, the
interactions, and query criteria on the state before and after the change), the
filters a subscriber may narrow it with (`canFilterBy`) and what a full-resource
notification carries besides the focus (`notificationShape`). R4 has no
SubscriptionTopic resource, so the server keeps its topics as data: `Basic` resources
carrying the R5 SubscriptionTopic cross-version extensions, in extensions/ (Backport IG
"Subscription Topics in R4", its example `Basic/r4-encounter-complete`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import fhirpathpy

from fhirserver.conformance import load_resources
from fhirserver.errors import BadRequest, NotSupported
from fhirserver.search.match import matches
from fhirserver.search.params import registry
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery

CREATE, UPDATE, DELETE = "create", "update", "delete"

# `fhirPathCriteria`, compiled: called with the resource environment
# {"previous": ..., "current": ...} (R5 subscriptiontopic.html: `%previous`, `%current`).
FhirPathCriteria = Callable[[Mapping[str, Any], Mapping[str, Any]], list[Any]]

# Search prefixes (R4 search.html "prefix") a `canFilterBy.comparator` may allow; `eq`
# is what a value without a prefix means, so it is always allowed.
_PREFIXES = ("ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIXED_TYPES = frozenset({"date", "number", "quantity"})


@dataclass(frozen=True)
class Trigger:
    """One `resourceTrigger`: which changes of which type the topic is about."""

    resource_type: str
    # `supportedInteraction`: of "create", "update", "delete".
    interactions: frozenset[str]
    # `queryCriteria.previous` / `.current`: search criteria on the state before and
    # after the change (None: that state is not tested).
    previous: SearchQuery | None = None
    current: SearchQuery | None = None
    # `queryCriteria.resultForCreate` / `resultForDelete`: the `previous` test's result
    # for a create (there is no previous state) and the `current` test's for a delete.
    result_for_create: bool = True
    result_for_delete: bool = False
    # `queryCriteria.requireBoth`: both tests must pass (else either one).
    require_both: bool = False
    # `fhirPathCriteria`, compiled once; when present it must hold as well.
    fhirpath: FhirPathCriteria | None = field(default=None, compare=False)

    def fires(
        self,
        interaction: str,
        previous: Mapping[str, Any] | None,
        current: Mapping[str, Any] | None,
    ) -> bool:
        """Whether this change (`previous` None on create, `current` None on delete)
        meets the trigger (R5 subscriptiontopic.html "resourceTrigger.queryCriteria")."""
        if interaction not in self.interactions:
            return False
        if self.fhirpath is not None and not _holds(self.fhirpath, previous, current):
            return False
        results: list[bool] = []
        if self.previous is not None:
            results.append(
                self.result_for_create
                if previous is None
                else matches(self.previous, dict(previous))
            )
        if self.current is not None:
            results.append(
                self.result_for_delete if current is None else matches(self.current, dict(current))
            )
        if not results:
            return True
        return all(results) if self.require_both else any(results)


def _holds(
    criteria: FhirPathCriteria,
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
) -> bool:
    # An absent state is the empty resource, so `%previous.id.empty()` is true on a
    # create, as the IG's example expression expects.
    environment = {"previous": dict(previous or {}), "current": dict(current or {})}
    return criteria(dict(current or previous or {}), environment) == [True]


@dataclass(frozen=True)
class FilterBy:
    """One `canFilterBy`: a search parameter a subscriber may filter on."""

    resource_type: str
    parameter: str
    # `canFilterBy.modifier`: allowed search modifiers; empty: none.
    modifiers: tuple[str, ...] = ()
    # `canFilterBy.comparator`: allowed prefixes besides `eq`; empty: none.
    comparators: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    triggers: tuple[Trigger, ...]
    filters: tuple[FilterBy, ...] = ()
    # `notificationShape`: per resource type, the `_include`s a full-resource
    # notification adds to the focus.
    shapes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # `notificationShape.revInclude`, per resource type.
    rev_shapes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    description: str = ""

    def resource_types(self) -> frozenset[str]:
        return frozenset(t.resource_type for t in self.triggers)

    def triggered(
        self,
        resource_type: str,
        interaction: str,
        previous: Mapping[str, Any] | None,
        current: Mapping[str, Any] | None,
    ) -> bool:
        """Whether a change of a resource of `resource_type` is an event of this topic."""
        return any(
            t.resource_type == resource_type and t.fires(interaction, previous, current)
            for t in self.triggers
        )

    def includes(self, resource_type: str) -> tuple[str, ...]:
        return next((inc for rt, inc in self.shapes if rt == resource_type), ())

    def rev_includes(self, resource_type: str) -> tuple[str, ...]:
        return next((inc for rt, inc in self.rev_shapes if rt == resource_type), ())

    def shape_params(self, resource_type: str) -> list[tuple[str, str]]:
        """The search parameters (`_include`, `_revinclude`) that bring in what a
        notification about a `resource_type` focus carries besides it."""
        return [("_include", _directive(i)) for i in self.includes(resource_type)] + [
            ("_revinclude", _directive(r)) for r in self.rev_includes(resource_type)
        ]

    def filter_query(self, criteria: str) -> SearchQuery:
        """The search a `backport-filter-criteria` value (`Appointment?patient=Patient/1`)
        stands for. Only parameters this topic's `canFilterBy` lists for that type, with
        only the modifiers and comparators it allows (Backport IG "Filters"); anything
        else is `NotSupported` naming the parameter."""
        resource_type, _, query = criteria.partition("?")
        if resource_type not in self.resource_types():
            raise NotSupported(
                f"Topic {self.url} has no trigger on {resource_type or '(no type)'}: "
                f"filter criteria must start with one of {', '.join(sorted(self.resource_types()))}"
            )
        params = parse_qsl(query, keep_blank_values=True)
        if not params:
            raise BadRequest(f"Filter criteria {criteria!r} name no parameter")
        for name, value in params:
            self._check_filter(resource_type, name, value)
        return parse_search((resource_type,), params, strict=True)

    def filter_queries(self, criteria: Iterable[str]) -> dict[str, SearchQuery]:
        """Several filters of one subscription, ANDed (Backport IG "Filters"), one query
        per resource type."""
        combined: dict[str, SearchQuery] = {}
        for one in criteria:
            query = self.filter_query(one)
            before = combined.get(query.resource_type)
            combined[query.resource_type] = (
                query
                if before is None
                else SearchQuery(
                    resource_types=before.resource_types,
                    clauses=before.clauses + query.clauses,
                )
            )
        return combined

    def _check_filter(self, resource_type: str, name: str, value: str) -> None:
        code, _, modifier = name.partition(":")
        allowed = next(
            (f for f in self.filters if f.resource_type == resource_type and f.parameter == code),
            None,
        )
        if allowed is None:
            can = ", ".join(f.parameter for f in self.filters if f.resource_type == resource_type)
            raise NotSupported(
                f"Filter parameter {code!r} is not supported by topic {self.url} "
                f"on {resource_type} (canFilterBy: {can or 'none'})"
            )
        if modifier and modifier not in allowed.modifiers:
            raise NotSupported(
                f"Filter parameter {name!r}: modifier {modifier!r} is not allowed by topic "
                f"{self.url} (allowed: {', '.join(allowed.modifiers) or 'none'})"
            )
        param = registry().get(resource_type, code)
        prefix = value[:2]
        if (
            param is not None
            and param.type in _PREFIXED_TYPES
            and prefix in _PREFIXES
            and prefix not in allowed.comparators
        ):
            raise NotSupported(
                f"Filter parameter {code!r}: comparator {prefix!r} is not allowed by topic "
                f"{self.url} (allowed: eq{''.join(', ' + c for c in allowed.comparators)})"
            )


def matches_filters(
    queries: Mapping[str, SearchQuery], resource_type: str, resource: Mapping[str, Any]
) -> bool:
    """Whether a focus passes a subscription's filters (`Topic.filter_queries`); a type
    the filters do not mention passes."""
    query = queries.get(resource_type)
    return query is None or matches(query, dict(resource))


# --- Basic-wrapped topics (Backport IG "Subscription Topics in R4") ---------------------

SUBSCRIPTION_TOPIC_CODE = "SubscriptionTopic"
# The cross-version extensions: R5 (`5.0`) and R4B (`4.3`) both appear in the IG's own
# example, so the element name after this marker is what counts.
_EXTENSION_MARK = "/StructureDefinition/extension-SubscriptionTopic."


def is_topic(resource: Mapping[str, Any]) -> bool:
    """A `Basic` whose code is the FHIR type `SubscriptionTopic`."""
    if resource.get("resourceType") != "Basic":
        return False
    codings = resource.get("code", {}).get("coding", ())
    return any(c.get("code") == SUBSCRIPTION_TOPIC_CODE for c in codings)


def load_topics(resources: Iterable[Mapping[str, Any]]) -> dict[str, Topic]:
    """The topics among `resources` (other resources are skipped), by canonical URL.
    Query criteria are parsed once, FHIRPath criteria compiled once; a criteria string
    the server cannot search with raises (a topic must never silently match nothing)."""
    topics: dict[str, Topic] = {}
    for resource in resources:
        if is_topic(resource):
            topic = topic_from_basic(resource)
            topics[topic.url] = topic
    return topics


def server_topics() -> dict[str, Topic]:
    """The topics this server ships (extensions/), by canonical URL."""
    return load_topics(load_resources("extensions"))


def topic_from_basic(resource: Mapping[str, Any]) -> Topic:
    elements = _elements(resource)
    url = _first(elements, "url", "valueUri")
    if not url:
        raise ValueError(f"Basic/{resource.get('id')}: a SubscriptionTopic needs a url")
    triggers = tuple(_trigger(ext) for ext in elements.get("resourceTrigger", ()))
    filters = tuple(_filter(ext) for ext in elements.get("canFilterBy", ()))
    shapes = [_shape(ext) for ext in elements.get("notificationShape", ())]
    topic = Topic(
        url=url,
        title=_first(elements, "title", "valueString") or url,
        triggers=triggers,
        filters=filters,
        shapes=tuple((rt, inc) for rt, inc, _ in shapes if inc),
        rev_shapes=tuple((rt, rev) for rt, _, rev in shapes if rev),
        description=_first(elements, "description", "valueMarkdown"),
    )
    for resource_type, _, _ in shapes:
        # Parsed once here, so a shape the server cannot follow fails the load, not a
        # delivery.
        parse_search((resource_type,), topic.shape_params(resource_type), strict=True)
    return topic


def _elements(resource: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for ext in [*resource.get("extension", ()), *resource.get("modifierExtension", ())]:
        url = str(ext.get("url", ""))
        if _EXTENSION_MARK in url:
            found.setdefault(url.split(_EXTENSION_MARK, 1)[1], []).append(ext)
    return found


def _first(elements: Mapping[str, Sequence[Mapping[str, Any]]], name: str, key: str) -> str:
    values = elements.get(name, ())
    return str(values[0].get(key, "")) if values else ""


def _parts(ext: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(str(sub.get("url")), sub) for sub in ext.get("extension", ())]


def _value(sub: Mapping[str, Any]) -> Any:
    return next((v for k, v in sub.items() if k.startswith("value")), None)


def _type_name(uri: str) -> str:
    # `resource` is a type name or its StructureDefinition URL.
    return uri.rsplit("/", 1)[-1]


def _trigger(ext: Mapping[str, Any]) -> Trigger:
    resource_type = ""
    interactions: set[str] = set()
    fhirpath: FhirPathCriteria | None = None
    criteria: dict[str, Any] = {}
    for name, sub in _parts(ext):
        if name == "resource":
            resource_type = _type_name(str(_value(sub)))
        elif name == "supportedInteraction":
            interactions.add(str(_value(sub)))
        elif name == "fhirPathCriteria":
            fhirpath = fhirpathpy.compile(str(_value(sub)))
        elif name == "queryCriteria":
            criteria = {n: _value(s) for n, s in _parts(sub)}
    if not resource_type:
        raise ValueError("a resourceTrigger needs a resource")

    def query(text: Any) -> SearchQuery | None:
        if not text:
            return None
        return parse_search(
            (resource_type,), parse_qsl(str(text), keep_blank_values=True), strict=True
        )

    return Trigger(
        resource_type=resource_type,
        # R5: no supportedInteraction means all of them.
        interactions=frozenset(interactions or {CREATE, UPDATE, DELETE}),
        previous=query(criteria.get("previous")),
        current=query(criteria.get("current")),
        result_for_create=criteria.get("resultForCreate", "test-passes") == "test-passes",
        result_for_delete=criteria.get("resultForDelete", "test-fails") == "test-passes",
        require_both=bool(criteria.get("requireBoth", False)),
        fhirpath=fhirpath,
    )


def _filter(ext: Mapping[str, Any]) -> FilterBy:
    parts = _parts(ext)
    values = [(name, str(_value(sub))) for name, sub in parts]
    resource = next((v for n, v in values if n == "resource"), "")
    parameter = next((v for n, v in values if n == "filterParameter"), "")
    if not resource or not parameter:
        raise ValueError("a canFilterBy needs resource and filterParameter")
    return FilterBy(
        resource_type=_type_name(resource),
        parameter=parameter,
        modifiers=tuple(v for n, v in values if n == "modifier"),
        comparators=tuple(v for n, v in values if n == "comparator"),
    )


def _directive(include: str) -> str:
    """The `_include` value of a shape's `include` / `revInclude`. R5 gives its format as
    `[resource type]:[search parameter]`; the IG's example topic appends further search
    syntax (`Encounter:patient&iterate=Patient.link`), which is left out: the shape's
    include is followed, one level, as `_include` would (R4 search.html#include)."""
    return include.split("&", 1)[0]


def _shape(ext: Mapping[str, Any]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    values = [(name, _value(sub)) for name, sub in _parts(ext)]
    resource = next((str(v) for n, v in values if n == "resource"), "")
    includes = tuple(str(v) for n, v in values if n == "include")
    rev = tuple(str(v) for n, v in values if n == "revInclude")
    return _type_name(resource), includes, rev
