"""Evaluate a SearchQuery against one resource in memory (R4 search.html).

The same semantics as the SQLite compiler (`storage/sqlite/search.py`), over the index
entries `extract.index_entries` gives the resource: a query is an AND of OR-lists of
predicates (search.html#combining); each predicate asks whether some entry of its
parameter matches (search.html#ptypes, #modifiers, #prefix), or, for `:not` and
`:missing=true`, whether none does; an `AllOfPredicate` nests a whole AND of OR-lists
as one predicate (an authorization's alternatives, DESIGN.md "Authorization"). Chains
(search.html#chaining) need `resolve` to fetch a reference's target; `_has`
(search.html#has) needs `referrers` to find the resources that point at this one. It
is the oracle the backends are tested against, and evaluates criteria (such as a
subscription's) on one resource without a store.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhirserver.errors import FHIRError, NotSupported
from fhirserver.search.extract import index_entries, normalize
from fhirserver.search.params import Registry
from fhirserver.search.prefixes import Condition, date_condition, number_condition
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    CompositePredicate,
    DateEntry,
    DatePredicate,
    HasPredicate,
    IdPredicate,
    IndexEntry,
    LastUpdatedPredicate,
    MissingPredicate,
    NumberEntry,
    NumberPredicate,
    Predicate,
    ReferenceEntry,
    ReferencePredicate,
    RowPredicate,
    SearchQuery,
    StringEntry,
    StringPredicate,
    TokenEntry,
    TokenPredicate,
    UriEntry,
    UriPredicate,
)
from fhirserver.search.time import date_range, to_micros

Resource = dict[str, Any]
# (target type, target id) -> the current target, or None when there is none.
Resolve = Callable[[str, str], Resource | None]
# (source type, reference parameter, target type, target id) -> the current resources of
# the source type whose parameter refers to the target.
Referrers = Callable[[str, str, str, str], list[Resource]]

# --- One index entry against one predicate --------------------------------------------


def _string_matches(p: StringPredicate, entry: StringEntry) -> bool:
    """search.html#string: starts with, or :exact / :contains, ignoring case and accents."""
    if p.mode == "exact":
        return entry.exact == p.value
    if p.mode == "contains":
        return normalize(p.value) in entry.normalized
    return entry.normalized.startswith(normalize(p.value))


def _token_matches(p: TokenPredicate, entry: TokenEntry) -> bool:
    """search.html#token: `[code]`, `[system]|[code]`, `|[code]` (no system), `[system]|`."""
    if p.code is not None and entry.code != p.code:
        return False
    if p.system == "":
        return entry.system is None
    return p.system is None or entry.system == p.system


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _holds(condition: Condition[Any], low: float, high: float) -> bool:
    """Whether the stored range from `low` to `high` meets a prefix's condition
    (search.html#prefix; the meaning of each prefix is in `prefixes.py`)."""
    stored = {"low": low, "high": high}
    held = all(_COMPARE[op](stored[end], bound) for end, op, bound in condition.terms)
    return not held if condition.negated else held


def _micros_range(low: datetime, high: datetime) -> tuple[int, int]:
    return to_micros(low), to_micros(high)


def _date_matches(p: DatePredicate, entry: DateEntry) -> bool:
    return _holds(date_condition(p.prefix, *_micros_range(p.low, p.high)), entry.low, entry.high)


def _units_match(p: NumberPredicate, entry: NumberEntry) -> bool:
    """search.html#quantity: `n|system|code` matches system and code; `n||code` the unit
    code or its display."""
    if p.system is not None and entry.system != p.system:
        return False
    if p.code is None:
        return True
    if p.system is not None:
        return entry.code == p.code
    return p.code in (entry.code, entry.unit)


def _number_matches(p: NumberPredicate, entry: NumberEntry) -> bool:
    condition = number_condition(p.prefix, p.value, p.low, p.high)
    return _holds(condition, entry.low, entry.high) and _units_match(p, entry)


def _reference_matches(p: ReferencePredicate, entry: ReferenceEntry) -> bool:
    """search.html#reference: each part the search gives (type, id, url) must agree, or
    the stored reference is the same target as an absolute URL on this server."""
    wanted = (
        (p.url, entry.url),
        (p.target_id, entry.target_id),
        (p.target_type, entry.target_type),
    )
    local = all(want is None or want == have for want, have in wanted)
    return local or entry.url in p.absolute


def _uri_matches(p: UriPredicate, entry: UriEntry) -> bool:
    """search.html#uri: exact, or :below (a prefix of the stored uri) / :above (the
    stored uri a prefix of the value)."""
    if p.mode == "below":
        return entry.value.startswith(p.value)
    if p.mode == "above":
        return p.value.startswith(entry.value)
    return entry.value == p.value


# Predicate type -> (the entry type it reads, the test of one such entry).
_ROW_TESTS: dict[type[Any], tuple[type[Any], Callable[[Any, Any], bool]]] = {
    StringPredicate: (StringEntry, _string_matches),
    TokenPredicate: (TokenEntry, _token_matches),
    DatePredicate: (DateEntry, _date_matches),
    NumberPredicate: (NumberEntry, _number_matches),
    ReferencePredicate: (ReferenceEntry, _reference_matches),
    UriPredicate: (UriEntry, _uri_matches),
}

# A parameter type -> the entry type that holds its values (for :missing).
_ENTRY_OF_KIND: dict[str, type[Any]] = {
    "string": StringEntry,
    "token": TokenEntry,
    "date": DateEntry,
    "number": NumberEntry,
    "quantity": NumberEntry,
    "reference": ReferenceEntry,
    "uri": UriEntry,
}


def _row_matches(p: Predicate, entry: IndexEntry) -> bool:
    """Whether one entry meets `p` (ignoring :not, which is about all the entries)."""
    if not isinstance(p, RowPredicate):
        raise TypeError(f"no index entry test for {p!r}")
    entry_type, test = _ROW_TESTS[type(p)]
    return isinstance(entry, entry_type) and entry.param == p.param and test(p, entry)


def _composite_matches(p: CompositePredicate, entries: tuple[IndexEntry, ...]) -> bool:
    """search.html#composite: one element (entry group) meets every component."""
    first, *rest = p.components
    groups = {entry.group for entry in entries if _row_matches(first, entry)}
    if not rest:
        return bool(groups)
    return any(
        group is not None
        and all(any(e.group == group and _row_matches(c, e) for e in entries) for c in rest)
        for group in groups
    )


def _missing_matches(p: MissingPredicate, entries: tuple[IndexEntry, ...]) -> bool:
    """search.html#modifiers: `:missing=true` when the parameter has no value at all."""
    kind = _ENTRY_OF_KIND[p.kind]
    present = any(isinstance(entry, kind) and entry.param == p.param for entry in entries)
    return present != p.missing


def _last_updated(resource: Resource) -> tuple[int, int] | None:
    """meta.lastUpdated as the instant it is, stored to the microsecond: [t, t + 1)."""
    text = (resource.get("meta") or {}).get("lastUpdated")
    if not isinstance(text, str):
        return None
    try:
        low = to_micros(date_range(text)[0])
    except FHIRError:
        return None
    return low, low + 1


# --- A query against a resource -------------------------------------------------------


@dataclass
class _Matcher:
    resolve: Resolve | None
    referrers: Referrers | None
    # The search parameters the query was parsed with (None: the shipped ones).
    known: Registry | None = None
    # id(resource) -> (resource, its entries): each resource is indexed once per call,
    # and kept alive so that its id is not reused.
    _entries: dict[int, tuple[Resource, tuple[IndexEntry, ...]]] = field(
        default_factory=dict, init=False
    )

    def entries(self, resource: Resource) -> tuple[IndexEntry, ...]:
        key = id(resource)
        if key not in self._entries:
            self._entries[key] = (resource, index_entries(resource, self.known, whole=True))
        return self._entries[key][1]

    def predicate(self, p: Predicate, resource: Resource) -> bool:
        if isinstance(p, IdPredicate):
            return resource.get("id") in p.ids
        if isinstance(p, LastUpdatedPredicate):
            instant = _last_updated(resource)
            if instant is None:
                return False
            return _holds(date_condition(p.prefix, *_micros_range(p.low, p.high)), *instant)
        if isinstance(p, MissingPredicate):
            return _missing_matches(p, self.entries(resource))
        if isinstance(p, ChainPredicate):
            return any(self.predicate(p.inner, target) for target in self.targets(p, resource))
        if isinstance(p, HasPredicate):
            return any(self.predicate(p.inner, source) for source in self.sources(p, resource))
        if isinstance(p, CompositePredicate):
            return _composite_matches(p, self.entries(resource))
        if isinstance(p, AllOfPredicate):
            return self.all_of(p, resource)
        found = any(_row_matches(p, entry) for entry in self.entries(resource))
        return not found if isinstance(p, TokenPredicate) and p.negate else found

    def all_of(self, p: AllOfPredicate, resource: Resource) -> bool:
        """Of its type, if it names one, and every OR-list has a predicate that holds."""
        if p.resource_type is not None and resource.get("resourceType") != p.resource_type:
            return False
        return all(any(self.predicate(q, resource) for q in clause) for clause in p.clauses)

    def targets(self, p: ChainPredicate, resource: Resource) -> Iterable[Resource]:
        """The existing targets, of the chain's types, of the reference parameter."""
        assert self.resolve is not None
        for entry in self.entries(resource):
            if (
                isinstance(entry, ReferenceEntry)
                and entry.param == p.param
                and entry.target_type in p.target_types
                and entry.target_id is not None
            ):
                target = self.resolve(entry.target_type, entry.target_id)
                if target is not None:
                    yield target

    def sources(self, p: HasPredicate, resource: Resource) -> list[Resource]:
        assert self.referrers is not None
        resource_type, resource_id = resource.get("resourceType"), resource.get("id")
        if not isinstance(resource_type, str) or not isinstance(resource_id, str):
            return []
        return self.referrers(p.source_type, p.param, resource_type, resource_id)


def _check_supported(
    predicates: Iterable[Predicate], resolve: Resolve | None, referrers: Referrers | None
) -> None:
    """Refuse up front what cannot be evaluated, whatever the resource."""
    for p in predicates:
        if isinstance(p, ChainPredicate):
            if resolve is None:
                raise NotSupported(f"Chained search on {p.param!r} needs the referenced resources")
            _check_supported((p.inner,), resolve, referrers)
        elif isinstance(p, HasPredicate):
            if referrers is None:
                raise NotSupported(f"_has:{p.source_type}:{p.param} needs the referring resources")
            _check_supported((p.inner,), resolve, referrers)
        elif isinstance(p, AllOfPredicate):
            _check_supported((q for clause in p.clauses for q in clause), resolve, referrers)


def matches(
    query: SearchQuery,
    resource: Resource,
    *,
    resolve: Resolve | None = None,
    referrers: Referrers | None = None,
    known: Registry | None = None,
) -> bool:
    """Whether `resource` is one of the matches of `query` (result parameters aside),
    by the search parameters `known` (those `query` was parsed with; None: the shipped).

    Raises NotSupported when the query chains without `resolve`, or has `_has` without
    `referrers`.
    """
    _check_supported((p for clause in query.clauses for p in clause), resolve, referrers)
    if resource.get("resourceType") not in query.resource_types:
        return False
    matcher = _Matcher(resolve, referrers, known)
    return all(any(matcher.predicate(p, resource) for p in clause) for clause in query.clauses)
