"""Subscription topics (Subscriptions R5 Backport IG 1.1.0 "Topics"; R5
subscriptiontopic.html): what a topic-based subscription is notified of.

A topic names the resource changes it is about (`resourceTrigger`: the type, the
interactions, and query criteria on the state before and after the change), the
filters a subscriber may narrow it with (`canFilterBy`) and what a full-resource
notification carries besides the focus (`notificationShape`). R4 has no
SubscriptionTopic resource, so the server keeps its topics as data (extensions/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirserver.search.match import matches
from fhirserver.search.query import SearchQuery

CREATE, UPDATE, DELETE = "create", "update", "delete"


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


@dataclass(frozen=True)
class FilterBy:
    """One `canFilterBy`: a search parameter a subscriber may filter on."""

    resource_type: str
    parameter: str
    # Allowed comparators/modifiers; empty: only plain equality.
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topic:
    url: str
    title: str
    triggers: tuple[Trigger, ...]
    filters: tuple[FilterBy, ...] = ()
    # `notificationShape`: per resource type, the `_include`s a full-resource
    # notification adds to the focus.
    shapes: tuple[tuple[str, tuple[str, ...]], ...] = ()

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
