"""Compile a SearchQuery to MongoDB filter documents and a page pipeline.

A row predicate is one `$elemMatch` on the index array of its type: every condition
must hold for the same index element, as one SQLite row must meet them. Chains and
`_has` run as sub-queries first; the keys they find, up to `join_keys` of them, feed
the outer filter's `$in`. Past that a criterion of its own is a semi-join (`Join`):
the outer search reads its candidates in sort order, a batch at a time, and keeps those
whose references (chain) or referrers (`_has`) match, so that no filter ever lists
more than a batch's keys however many resources match (a filter over 16 MiB cannot
be sent at all); nested deeper, a wide chain is refused as too costly. An
`AllOfPredicate` (an AND of OR-lists as one predicate: a token's alternatives, DESIGN.md
"Authorization") is a nested `$and` of `$or`s.
Semantics follow R4 search.html; `match.py` implements the same in memory and
`storage/sqlite/search.py` in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fhirserver.errors import BadRequest, TooCostly
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
    keys_filter,
    missing_sort_value,
    resource_key,
)

# The most keys a chain or `_has` puts in one `$in` (about 60 KB of filter), and how
# many candidates a semi-join checks at once (each names about one key).
JOIN_KEYS = 1000


class Finder(Protocol):
    """Runs a sub-query: the matching `resources` documents, at most `limit`."""

    async def __call__(
        self, where: Document, projection: Document, limit: int | None = None
    ) -> list[Document]: ...


class Aggregator(Protocol):
    """Runs an aggregation pipeline on `resources`."""

    async def __call__(self, pipeline: list[Document]) -> list[Document]: ...


# What a page or an include reads of a document: not the index, except references.
VERSION_PROJECTION: Document = {field: 0 for field in INDEX_FIELDS if field != "ref"}
NOTHING: Document = {"_id": {"$in": []}}


def current(resource_types: tuple[str, ...] | list[str]) -> Document:
    """Resources of these types that exist now (not deleted)."""
    types = list(resource_types)
    return {"type": types[0] if len(types) == 1 else {"$in": types}, "body": {"$ne": None}}


@dataclass(frozen=True)
class Join:
    """A chain or `_has` criterion whose matches are too many for one `$in`: checked
    on each batch of candidates instead (`Compiler.keep`)."""

    predicate: ChainPredicate | HasPredicate
    # The compiled inner criterion, on the targets (chain) or the referrers (_has).
    inner: Document


class Compiler:
    def __init__(self, find: Finder, aggregate: Aggregator, join_keys: int = JOIN_KEYS) -> None:
        self._find = find
        self._aggregate = aggregate
        self._join_keys = join_keys
        # Filled by filter(): what its filter leaves out, for keep() to check.
        self.joins: list[Join] = []

    async def filter(self, query: SearchQuery) -> Document:
        """The filter of the query; a wide chain or `_has` that is a criterion of its
        own is left out of it and put in `joins`."""
        conditions = [current(query.resource_types)]
        for clause in query.clauses:
            if len(clause) == 1 and isinstance(clause[0], ChainPredicate | HasPredicate):
                joined = await self.joined(clause[0], top=True)
                if joined is not None:
                    conditions.append(joined)
            else:
                conditions.append(await self.any_of(clause))
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    async def joined(self, p: ChainPredicate | HasPredicate, top: bool = False) -> Document | None:
        """The `$in` condition of a chain or `_has` over at most `join_keys` keys; past
        that None and a Join (`top`: a criterion of its own), or TooCostly."""
        inner = await self.predicate(p.inner)
        if isinstance(p, ChainPredicate):
            targets = await self._find(
                {"$and": [current(p.target_types), inner]},
                {"type": 1, "id": 1},
                self._join_keys + 1,
            )
            keys = [(target["type"], target["id"]) for target in targets]
        else:
            keys = await self._referenced(p, inner, None, self._join_keys + 1)
        if len(keys) <= self._join_keys:
            return _pointing(p, keys)
        if not top:
            raise TooCostly(
                f"The chained or _has criterion on {p.param} matches more than"
                f" {self._join_keys} resources inside another one; narrow it"
            )
        self.joins.append(Join(p, inner))
        return None

    async def keep(self, candidates: list[Document]) -> list[Document]:
        """The candidates (read with their `ref` array) that meet every Join."""
        for join in self.joins:
            if not candidates:
                break
            p = join.predicate
            if isinstance(p, ChainPredicate):
                wanted = {
                    (entry["tt"], entry["ti"])
                    for candidate in candidates
                    for entry in candidate.get("ref", ())
                    if entry["p"] == p.param and entry["tt"] in p.target_types and entry["ti"]
                }
                # The keys first: a server plans from the index whatever the order, a
                # document-at-a-time matcher (mongomock) rejects most documents at once.
                where = {"$and": [keys_filter(wanted), current(p.target_types), join.inner]}
                found = await self._find(where, {"type": 1, "id": 1}, None)
                hits = {(target["type"], target["id"]) for target in found}
                candidates = [
                    candidate
                    for candidate in candidates
                    if any(
                        entry["p"] == p.param and (entry["tt"], entry["ti"]) in hits
                        for entry in candidate.get("ref", ())
                    )
                ]
            else:
                keys = [(candidate["type"], candidate["id"]) for candidate in candidates]
                referenced = set(await self._referenced(p, join.inner, keys, None))
                candidates = [c for c in candidates if (c["type"], c["id"]) in referenced]
        return candidates

    async def _referenced(
        self,
        p: HasPredicate,
        inner: Document,
        among: Sequence[tuple[str, str]] | None,
        limit: int | None,
    ) -> list[tuple[str, str]]:
        """The distinct (type, id) that matching `p.source_type` resources reference
        through `p.param`, among `among` if given; grouped by the database, so that a
        resource referenced a thousand times comes back once."""
        element: Document = {"p": p.param, "tt": {"$ne": None}, "ti": {"$ne": None}}
        if among is not None:
            element = {"p": p.param, **keys_filter(among, "tt", "ti")}
        pipeline: list[Document] = [
            {
                "$match": {
                    "$and": [current([p.source_type]), inner, {"ref": {"$elemMatch": element}}]
                }
            },
            {"$unwind": "$ref"},
            {"$match": {f"ref.{name}": value for name, value in _flat(element).items()}},
            {"$group": {"_id": {"tt": "$ref.tt", "ti": "$ref.ti"}}},
        ]
        if limit is not None:
            pipeline.append({"$limit": limit})
        groups = await self._aggregate(pipeline)
        return [(group["_id"]["tt"], group["_id"]["ti"]) for group in groups]

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
        if isinstance(p, ChainPredicate | HasPredicate):
            # A chain's targets must exist now and match: a deleted or dangling target
            # matches nothing, even under a negated inner test.
            joined = await self.joined(p)
            assert joined is not None  # not top: a wide one raised
            return joined
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


def _pointing(p: ChainPredicate | HasPredicate, keys: Sequence[tuple[str, str]]) -> Document:
    """Resources that reference these (chain), or that these are (_has)."""
    if not keys:
        return NOTHING
    if isinstance(p, HasPredicate):
        return {"_id": {"$in": sorted(resource_key(t, i) for t, i in keys)}}
    condition: Document = {"p": p.param, **keys_filter(keys, "tt", "ti")}
    return {"ref": {"$elemMatch": condition}}


def _flat(element: Document) -> Document:
    """An element condition without its `$or` (one per type), for a stage after $unwind
    that only needs the parameter: the `$or` was checked by the $match before."""
    return {name: value for name, value in element.items() if not name.startswith("$")}


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


def page_pipelines(
    where: Document, query: SearchQuery, limit: int, after: list[Any] | None, backwards: bool
) -> tuple[list[list[Document]], list[str]]:
    """The aggregations that read one page, to run in turn until `limit` documents are
    read, and the fields of its keyset position. A sort on one search parameter reads
    the resources that have the parameter and then those that have not (they go last:
    search.html#sort leaves that to the server), each on the stored sort key, which an
    index declared for the parameter (`documents.SORTED_PARAMETERS`) returns in order. A
    sort on several parameters sorts on keys computed for the read."""
    fields, descending = sort_fields(query)
    names = [name for name, _ in fields]
    position = None if after is None else _position(after, len(names))
    if len(query.sort) == 1 and fields[0][1] is not None:
        return _present_then_missing(where, query.sort[0], limit, position, backwards), names
    directions = [d != backwards for d in descending]
    pipeline: list[Document] = [{"$match": where}]
    computed = {name: expression for name, expression in fields if expression is not None}
    if computed:
        pipeline.append({"$addFields": computed})
    if position is not None:
        pipeline.append({"$match": _after(names, directions, position)})
    pipeline += [*_sorted(names, directions, limit), {"$project": dict(VERSION_PROJECTION)}]
    return [pipeline], names


def _present_then_missing(
    where: Document, key: SortKey, limit: int, position: list[Any] | None, backwards: bool
) -> list[list[Document]]:
    """The reads of a page sorted on one parameter's stored key `sort.<param>.<a|d>`,
    which comes back as `k0` (`missing_sort_value` for a resource without one). Type and
    id break ties, ascending in a forward read."""
    field = f"sort.{key.param}.{'d' if key.descending else 'a'}"
    missing = missing_sort_value(key.kind, key.descending)
    keyed = [field, "type", "id"]

    def read(has_key: bool, since: list[Any] | None) -> list[Document]:
        names = keyed if has_key else keyed[1:]
        directions = [key.descending != backwards, backwards, backwards][-len(names) :]
        # A stored key equal to the placeholder ties with the missing ones, as in the
        # SQLite store ("" for a family of one space, sorting descending).
        placeholders = [None, missing]
        kept = {"$nin": placeholders} if has_key else {"$in": placeholders}
        conditions = [where, {field: kept}]
        if since is not None:
            conditions.append(_after(names, directions, since))
        k0 = f"${field}" if has_key else {"$literal": missing}
        return [
            {"$match": {"$and": conditions}},
            *_sorted(names, directions, limit),
            {"$addFields": {"k0": k0}},
            {"$project": dict(VERSION_PROJECTION)},
        ]

    if position is None:
        return (
            [read(False, None), read(True, None)]
            if backwards
            else [read(True, None), read(False, None)]
        )
    # A position among the resources without the key, or with the placeholder's value.
    if position[0] == missing:
        return (
            [read(False, position[1:]), read(True, None)]
            if backwards
            else [read(False, position[1:])]
        )
    return [read(True, position)] if backwards else [read(True, position), read(False, None)]


def _position(after: list[Any], length: int) -> list[Any]:
    if len(after) != length:
        raise BadRequest("The paging cursor does not fit this search", expression="_cursor")
    return after


def _sorted(names: list[str], directions: list[bool], limit: int) -> list[Document]:
    order = {name: -1 if d else 1 for name, d in zip(names, directions, strict=True)}
    return [{"$sort": order}, {"$limit": limit}]


def _after(names: list[str], directions: list[bool], values: list[Any]) -> Document:
    """Documents strictly after `values` in the sort order: a keyset boundary."""
    alternatives = []
    for n in range(len(names)):
        terms: Document = {names[m]: values[m] for m in range(n)}
        terms[names[n]] = {"$lt" if directions[n] else "$gt": values[n]}
        alternatives.append(terms)
    return {"$or": alternatives}
