"""Compile a SearchQuery to MongoDB filter documents and a page pipeline.

A row predicate is one `$elemMatch` on the index array of its type: every condition
must hold for the same index element, as one SQLite row must meet them. Chains and
`_has` run as sub-queries first; the keys they find feed the outer filter's `$in`. An
`AllOfPredicate` (an AND of OR-lists as one predicate: a token's alternatives, DESIGN.md
"Authorization") is a nested `$and` of `$or`s.
Semantics follow R4 search.html; `match.py` implements the same in memory and
`storage/sqlite/search.py` in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fhirserver.errors import BadRequest
from fhirserver.search.extract import INDEX_CUT, cut, normalize
from fhirserver.search.prefixes import (
    Condition,
    End,
    Operator,
    date_condition,
    number_condition,
)
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    CompositePredicate,
    DatePredicate,
    HasPredicate,
    IdPredicate,
    LastUpdatedPredicate,
    MissingPredicate,
    NumberPredicate,
    Predicate,
    ReferencePredicate,
    RowPredicate,
    SearchQuery,
    SortKey,
    StringPredicate,
    TokenPredicate,
    UriPredicate,
)
from fhirserver.search.time import to_micros
from fhirserver.storage.mongo.documents import (
    ARRAY_OF_KIND,
    INDEX_FIELDS,
    STRING_END,
    Document,
    missing_sort_value,
    resource_key,
)

# Runs a sub-query: (filter, projection) -> the matching `resources` documents.
Finder = Callable[[Document, Document], Awaitable[list[Document]]]

# What a page or an include reads of a document: not the index, except references.
VERSION_PROJECTION: Document = {field: 0 for field in INDEX_FIELDS if field != "ref"}
NOTHING: Document = {"_id": {"$in": []}}


def current(resource_types: tuple[str, ...] | list[str]) -> Document:
    """Resources of these types that exist now (not deleted)."""
    types = list(resource_types)
    return {"type": types[0] if len(types) == 1 else {"$in": types}, "body": {"$ne": None}}


class Compiler:
    def __init__(self, find: Finder) -> None:
        self._find = find

    async def filter(self, query: SearchQuery) -> Document:
        conditions = [current(query.resource_types)]
        conditions += [await self.any_of(clause) for clause in query.clauses]
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    async def any_of(self, clause: tuple[Predicate, ...]) -> Document:
        """An OR-list; an empty one holds for nothing."""
        alternatives = [await self.predicate(p) for p in clause]
        if not alternatives:
            return NOTHING
        return alternatives[0] if len(alternatives) == 1 else {"$or": alternatives}

    async def all_of(self, p: AllOfPredicate) -> Document:
        """Every OR-list, on a resource of `p.resource_type` if given; no conditions at
        all hold for every resource (the empty filter)."""
        conditions: list[Document] = [] if p.resource_type is None else [{"type": p.resource_type}]
        conditions += [await self.any_of(clause) for clause in p.clauses]
        if len(conditions) <= 1:
            return conditions[0] if conditions else {}
        return {"$and": conditions}

    async def predicate(self, p: Predicate) -> Document:
        """A condition on a `resources` document that holds when `p` holds for it."""
        if isinstance(p, IdPredicate):
            return {"id": {"$in": list(p.ids)}}
        if isinstance(p, LastUpdatedPredicate):
            # An instant, stored to the microsecond: the range [lu, lu + 1).
            updated = date_condition(p.prefix, to_micros(p.low), to_micros(p.high))
            return _condition("lu", "lu", updated, instant=True)
        if isinstance(p, MissingPredicate):
            field = f"{ARRAY_OF_KIND[p.kind]}.p"
            return {field: {"$ne": p.param}} if p.missing else {field: p.param}
        if isinstance(p, ChainPredicate):
            # The targets that exist now and match: a deleted or dangling target matches
            # nothing, even under a negated inner test.
            inner = await self.predicate(p.inner)
            targets = await self._find(
                {"$and": [current(p.target_types), inner]}, {"type": 1, "id": 1}
            )
            if not targets:
                return NOTHING
            by_type: dict[str, list[str]] = {}
            for target in targets:
                by_type.setdefault(target["type"], []).append(target["id"])
            pointing = [{"tt": t, "ti": {"$in": ids}} for t, ids in sorted(by_type.items())]
            condition: Document = {"p": p.param}
            condition.update(pointing[0] if len(pointing) == 1 else {"$or": pointing})
            return {"ref": {"$elemMatch": condition}}
        if isinstance(p, HasPredicate):
            inner = await self.predicate(p.inner)
            sources = await self._find(
                {"$and": [current([p.source_type]), inner, {"ref.p": p.param}]}, {"ref": 1}
            )
            keys = {
                resource_key(entry["tt"], entry["ti"])
                for source in sources
                for entry in source["ref"]
                if entry["p"] == p.param and entry["tt"] is not None and entry["ti"] is not None
            }
            return {"_id": {"$in": sorted(keys)}} if keys else NOTHING
        if isinstance(p, AllOfPredicate):
            return await self.all_of(p)
        if isinstance(p, CompositePredicate):
            # One element of the composite must satisfy every component.
            group: Document = {"p": p.param}
            for component in p.components:
                if not isinstance(component, RowPredicate):
                    raise TypeError(f"composite component {component!r}")
                _, element = self.element(component)
                group[f"c{component.param.rsplit('#', 1)[1]}"] = {"$elemMatch": element}
            return {"comp": {"$elemMatch": group}}
        array, element = self.element(p)
        match = {"$elemMatch": element}
        if isinstance(p, TokenPredicate) and p.negate:
            return {array: {"$not": match}}
        return {array: match}

    def element(self, p: RowPredicate) -> tuple[str, Document]:
        """(index array, the condition one of its elements must meet)."""
        if isinstance(p, StringPredicate):
            # Values are stored cut (search/extract.py INDEX_CUT), so compared cut.
            if p.mode == "exact":
                return "str", {"p": p.param, "e": cut(p.value)}
            value = cut(normalize(p.value))
            if p.mode == "contains":
                # A cut value may hold the text past its cut: a candidate, confirmed later.
                return "str", {
                    "p": p.param,
                    "n": {"$regex": f"{re.escape(value)}|^[\\s\\S]{{{INDEX_CUT}}}$"},
                }
            return "str", {"p": p.param, "n": {"$gte": value, "$lt": value + STRING_END}}
        if isinstance(p, TokenPredicate):
            token: Document = {"p": p.param}
            if p.code is not None:
                token["c"] = cut(p.code)
            if p.system == "":
                token["s"] = None
            elif p.system is not None:
                token["s"] = cut(p.system)
            return "tok", token
        if isinstance(p, DatePredicate):
            condition = date_condition(p.prefix, to_micros(p.low), to_micros(p.high))
            return "date", {"p": p.param, **_condition("lo", "hi", condition)}
        if isinstance(p, NumberPredicate):
            test = number_condition(p.prefix, p.value, p.low, p.high)
            conditions = [{"p": p.param}, _condition("lo", "hi", test)]
            if p.system is not None:
                conditions.append({"s": p.system})
            if p.code is not None:
                if p.system is not None:
                    conditions.append({"c": p.code})
                else:
                    # `[number]||[code]` matches the unit code or display (search.html#quantity)
                    conditions.append({"$or": [{"c": p.code}, {"u": p.code}]})
            return "num", {"$and": conditions}
        if isinstance(p, ReferencePredicate):
            local: Document = {}
            if p.url is not None:
                local["u"] = cut(p.url)
            if p.target_id is not None:
                local["ti"] = p.target_id
            if p.target_type is not None:
                local["tt"] = p.target_type
            if p.absolute:
                # The same target written as an absolute URL on this server.
                absolute = [cut(url) for url in p.absolute]
                return "ref", {"p": p.param, "$or": [local, {"u": {"$in": absolute}}]}
            return "ref", {"p": p.param, **local}
        if isinstance(p, UriPredicate):
            if p.mode == "below":
                uri: Any = {"$gte": cut(p.value), "$lt": cut(p.value) + STRING_END}
            elif p.mode == "above":
                # The stored uri is a prefix of the value: one of its prefixes.
                uri = {"$in": [p.value[:n] for n in range(1, min(len(p.value), INDEX_CUT) + 1)]}
            else:
                uri = cut(p.value)
            return "uri", {"p": p.param, "v": uri}
        raise TypeError(f"no index element for {p!r}")


_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
# What fails when a comparison does not hold: a `ne` is one of its comparisons failing.
_COMPLEMENT: dict[Operator, Operator] = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
# An instant is the range [t, t + 1) of whole microseconds, with only `t` stored: a
# comparison of its high end `t + 1` is one of `t`, as (operator, shift of the bound).
_INSTANT_HIGH: dict[Operator, tuple[str, int]] = {
    ">": ("$gte", 0),
    ">=": ("$gte", -1),
    "<": ("$lt", -1),
    "<=": ("$lt", 0),
}


def _condition(low: str, high: str, condition: Condition[Any], instant: bool = False) -> Document:
    """A prefix's condition (search.html#prefix, `search/prefixes.py`) on the stored range
    in the fields `low` and `high`; an `instant` stores only `low`."""

    def compare(end: End, operator: Operator, bound: Any) -> Document:
        if end == "high" and instant:
            mongo_operator, shift = _INSTANT_HIGH[operator]
            return {low: {mongo_operator: bound + shift}}
        return {low if end == "low" else high: {_OPERATORS[operator]: bound}}

    if condition.negated:
        failures = [compare(end, _COMPLEMENT[op], bound) for end, op, bound in condition.terms]
        return failures[0] if len(failures) == 1 else {"$or": failures}
    tests = [compare(*term) for term in condition.terms]
    # $and, not one document: two tests can be on the same field (an instant's).
    return tests[0] if len(tests) == 1 else {"$and": tests}


# --- sorting and paging ---------------------------------------------------------------


def sort_fields(query: SearchQuery) -> tuple[list[tuple[str, Any]], list[bool]]:
    """The page's sort keys as (field, expression computing it, or None for a stored
    field), ending with type and id, and whether each runs descending. A field sorted
    on already is not repeated: its first direction decides."""
    keys = [*query.sort, SortKey("_type_"), SortKey("_id")]
    fields: list[tuple[str, Any]] = []
    descending: list[bool] = []
    for n, key in enumerate(keys):
        stored = {"_type_": "type", "_id": "id", "_lastUpdated": "lu"}.get(key.param)
        if stored is not None:
            if any(name == stored for name, _ in fields):
                continue
            fields.append((stored, None))
        else:
            direction = "d" if key.descending else "a"
            missing = missing_sort_value(key.kind, key.descending)
            fields.append((f"k{n}", {"$ifNull": [f"$sort.{key.param}.{direction}", missing]}))
        descending.append(key.descending)
    return fields, descending


def page_pipeline(
    where: Document, query: SearchQuery, limit: int, after: list[Any] | None, backwards: bool
) -> tuple[list[Document], list[str]]:
    """The aggregation of one page, and the fields of its keyset position."""
    fields, descending = sort_fields(query)
    directions = [d != backwards for d in descending]
    pipeline: list[Document] = [{"$match": where}]
    computed = {name: expression for name, expression in fields if expression is not None}
    if computed:
        pipeline.append({"$addFields": computed})
    names = [name for name, _ in fields]
    if after is not None:
        if len(after) != len(names):
            raise BadRequest("The paging cursor does not fit this search", expression="_cursor")
        pipeline.append({"$match": _after(names, directions, after)})
    pipeline.append(
        {"$sort": {name: -1 if d else 1 for name, d in zip(names, directions, strict=True)}}
    )
    pipeline.append({"$limit": limit})
    projection = dict(VERSION_PROJECTION)
    pipeline.append({"$project": projection})
    return pipeline, names


def _after(names: list[str], directions: list[bool], values: list[Any]) -> Document:
    """Documents strictly after `values` in the sort order: a keyset boundary."""
    alternatives = []
    for n in range(len(names)):
        terms: Document = {names[m]: values[m] for m in range(n)}
        terms[names[n]] = {"$lt" if directions[n] else "$gt": values[n]}
        alternatives.append(terms)
    return {"$or": alternatives}
