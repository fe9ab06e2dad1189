"""Compile a SearchQuery to SQL over `resources`, `versions` and the index tables.

Every predicate is compiled relative to SQL expressions naming the resource it is about
(`Subject`: its type, its id and the seq of its current version, which keys its index
rows): the searched resource, the target of a chain, or the source of a `_has`. That is
what lets chains, `_has` and `AllOfPredicate` (an AND of OR-lists as one predicate: a
token's alternatives, DESIGN.md "Authorization") nest.
Semantics follow R4 search.html; `match.py` implements the same in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhirserver.errors import BadRequest
from fhirserver.search.extract import INDEX_CUT, cut, normalize
from fhirserver.search.prefixes import Condition, date_condition, number_condition
from fhirserver.search.query import (
    MAX_MICROS,
    MIN_MICROS,
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
    SearchQuery,
    SortKey,
    StringPredicate,
    TokenPredicate,
    UriPredicate,
)
from fhirserver.search.time import to_micros
from fhirserver.storage.sqlite.schema import VERSION_COLUMNS, table_of

# Beyond every stored string: the upper bound of a prefix range.
_STRING_END = "\U0010ffff"
FROM_CURRENT = "resources r JOIN versions v ON v.seq = r.seq"
# A search started from an index: its rows give current seqs, each read from `versions`
# by its key, then checked against `resources` (CROSS JOIN keeps that order: `resources`
# has no index by seq).
FROM_SEQS = (
    "versions v CROSS JOIN resources r ON r.type = +v.type AND r.id = v.id AND r.seq = v.seq"
)


@dataclass(frozen=True)
class Subject:
    """SQL expressions for the resource a predicate is about."""

    type: str
    id: str
    # The seq of its current version: the key of its index rows.
    seq: str


ROOT = Subject("r.type", "r.id", "r.seq")


# Whether a selective predicate on a type has so many index rows that testing it
# resource by resource beats listing its rows (the store counts them: store._dense).
Dense = Callable[[Predicate, str], bool]


def never_dense(predicate: Predicate, resource_type: str) -> bool:
    return False


@dataclass
class Compiler:
    # Named parameters: placeholders stay right whatever order the SQL is built in.
    args: dict[str, Any] = field(default_factory=dict)
    aliases: int = 0
    dense: Dense = never_dense

    def arg(self, value: Any) -> str:
        name = f"a{len(self.args)}"
        self.args[name] = value
        return f":{name}"

    def alias(self, prefix: str) -> str:
        self.aliases += 1
        return f"{prefix}{self.aliases}"

    # --- predicates -----------------------------------------------------------------

    def where(self, query: SearchQuery) -> tuple[str, str]:
        """The FROM and WHERE clauses' text: started from the index rows of the clause
        likeliest to be selective, unless it is the only clause, the order is by id and
        its rows are dense: then the type's resources are walked in id order and each
        tested, and a page is found among the first few thousand, rather than every
        match read and sorted. (Beside other clauses the matches may be few however
        many rows the one has: a walk could go through the whole type.)"""
        types = ", ".join(self.arg(t) for t in query.resource_types)
        conditions = [f"r.type IN ({types})", "v.body IS NOT NULL"]
        driver = _driver(query)
        if (
            driver is not None
            and len(query.clauses) == 1
            and not query.sort
            and self.dense(driver[0], query.resource_type)
        ):
            driver = None
        for clause in query.clauses:
            if clause is driver:
                # Start from the index: the versions with this value, not every resource.
                conditions.append(f"v.seq IN ({self._seqs(clause[0], query.resource_type)})")
                continue
            alternatives = [self.predicate(p, ROOT, root=True) for p in clause]
            # An empty OR-list holds for nothing, as in the matcher.
            conditions.append("(" + " OR ".join(alternatives) + ")" if alternatives else "0 = 1")
        return (FROM_SEQS if driver is not None else FROM_CURRENT), " AND ".join(conditions)

    def _seqs(self, p: Predicate, resource_type: str) -> str:
        """The current versions (seqs) of `resource_type` resources with an index row
        matching `p`."""
        if isinstance(p, ReferencePredicate) and p.absolute:
            # Index lookups one by one, rather than one OR that no index serves whole.
            forms = [ReferencePredicate(p.param, p.target_type, p.target_id)]
            forms += [ReferencePredicate(p.param, None, None, url) for url in p.absolute]
            return " UNION ".join(self._seqs(form, resource_type) for form in forms)
        table, alias, condition = self.row(p)
        return (
            f"SELECT {alias}.seq FROM {table} {alias} WHERE "
            f"{alias}.type = {self.arg(resource_type)} AND {condition}"
        )

    def predicate(self, p: Predicate, subject: Subject, root: bool = False) -> str:
        if isinstance(p, IdPredicate):
            ids = ", ".join(self.arg(i) for i in p.ids)
            return f"{subject.id} IN ({ids})"
        if isinstance(p, LastUpdatedPredicate):
            # An instant, stored to the microsecond: the range [t, t + 1).
            alias = "v" if root else self.alias("u")
            column = f"{alias}.last_updated"
            test = self._date_test(column, f"({column} + 1)", p.prefix, p.low, p.high)
            if root:
                return test
            return (
                f"EXISTS (SELECT 1 FROM versions {alias} WHERE {alias}.seq = {subject.seq} "
                f"AND {test})"
            )
        if isinstance(p, MissingPredicate):
            table = table_of(p.kind)
            alias = self.alias("m")
            exists = (
                f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.seq = {subject.seq} "
                f"AND {alias}.param = {self.arg(p.param)})"
            )
            return f"NOT {exists}" if p.missing else exists
        if isinstance(p, ChainPredicate):
            alias = self.alias("c")
            targets = ", ".join(self.arg(t) for t in p.target_types)
            # The target must exist now: a negated or :missing inner test alone would
            # also hold for a deleted or dangling target.
            target = Subject(f"{alias}.target_type", f"{alias}.target_id", f"{alias}e.seq")
            inner = self.predicate(p.inner, target)
            return (
                f"EXISTS (SELECT 1 FROM idx_reference {alias} "
                f"CROSS JOIN resources {alias}e ON {alias}e.type = {alias}.target_type "
                f"AND {alias}e.id = {alias}.target_id "
                f"CROSS JOIN versions {alias}v ON {alias}v.seq = {alias}e.seq "
                f"WHERE {alias}.seq = {subject.seq} AND {alias}.param = {self.arg(p.param)} "
                f"AND {alias}.target_type IN ({targets}) AND {alias}v.body IS NOT NULL "
                f"AND {inner})"
            )
        if isinstance(p, HasPredicate):
            alias = self.alias("h")
            if _selective(p.inner) is not None and not self.dense(p.inner, p.source_type):
                # The referring resources with that value, listed once; `+` makes each
                # reference to a candidate a lookup in that list. As an index column,
                # the list was probed value by value for every candidate: a cost that
                # grew with the matches in the whole store, not with the candidate's refs.
                inner = f"+{alias}.seq IN ({self._seqs(p.inner, p.source_type)})"
            else:
                # Each referring resource tested by its own index rows: for a dense
                # value, listing every match cost more than these probes (at 100x,
                # Patient?_has:Observation:patient:code= of 35,500 Observations took
                # 6.9 ms with the list, 2.1 ms without). The source's id only where the
                # inner test needs it (an _id, a nested _has): its rows are found by seq.
                source_id = (
                    f"(SELECT {alias}v.id FROM versions {alias}v WHERE {alias}v.seq = {alias}.seq)"
                )
                source = Subject(f"{alias}.type", source_id, f"{alias}.seq")
                inner = self.predicate(p.inner, source)
            return (
                f"EXISTS (SELECT 1 FROM idx_reference {alias} WHERE "
                f"{alias}.target_id = {subject.id} AND {alias}.target_type = {subject.type} "
                f"AND {alias}.param = {self.arg(p.param)} AND {alias}.type = "
                f"{self.arg(p.source_type)} AND {inner})"
            )
        if isinstance(p, CompositePredicate):
            return self._composite(p, subject)
        if isinstance(p, AllOfPredicate):
            return self._all_of(p, subject, root)
        table, alias, condition = self.row(p)
        exists = (
            f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.seq = {subject.seq} "
            f"AND {condition})"
        )
        return f"NOT {exists}" if isinstance(p, TokenPredicate) and p.negate else exists

    def _all_of(self, p: AllOfPredicate, subject: Subject, root: bool) -> str:
        """Every OR-list about the same resource, which must be of `p.resource_type` if
        given; no conditions at all hold for every resource, an empty OR-list for none."""
        conditions = (
            [] if p.resource_type is None else [f"{subject.type} = {self.arg(p.resource_type)}"]
        )
        for clause in p.clauses:
            alternatives = [self.predicate(q, subject, root) for q in clause]
            conditions.append("(" + " OR ".join(alternatives) + ")" if alternatives else "0 = 1")
        return "(" + " AND ".join(conditions) + ")" if conditions else "1 = 1"

    def _composite(self, p: CompositePredicate, subject: Subject) -> str:
        # One element (grp) must satisfy every component.
        first_table, first, first_condition = self.row(p.components[0])
        nested = []
        for component in p.components[1:]:
            table, alias, condition = self.row(component)
            nested.append(
                f"EXISTS (SELECT 1 FROM {table} {alias} WHERE {alias}.seq = {subject.seq} "
                f"AND {alias}.grp = {first}.grp AND {condition})"
            )
        return (
            f"EXISTS (SELECT 1 FROM {first_table} {first} WHERE {first}.seq = {subject.seq} "
            f"AND {first_condition}" + "".join(f" AND {n}" for n in nested) + ")"
        )

    def row(self, p: Predicate) -> tuple[str, str, str]:
        """(index table, its alias, the condition one of its rows must meet)."""
        if isinstance(p, StringPredicate):
            a = self.alias("s")
            param = f"{a}.param = {self.arg(p.param)}"
            # Values are stored cut (search/extract.py INDEX_CUT), so compared cut.
            if p.mode == "exact":
                return "idx_string", a, f"{param} AND {a}.exact = {self.arg(cut(p.value))}"
            value = cut(normalize(p.value))
            if p.mode == "contains":
                pattern = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                # A cut value may hold the text past its cut: a candidate, confirmed later.
                return (
                    "idx_string",
                    a,
                    f"{param} AND ({a}.norm LIKE {self.arg(pattern + '%')} ESCAPE '\\'"
                    f" OR length({a}.norm) = {INDEX_CUT})",
                )
            return (
                "idx_string",
                a,
                f"{param} AND {a}.norm >= {self.arg(value)} AND {a}.norm < "
                f"{self.arg(value + _STRING_END)}",
            )
        if isinstance(p, TokenPredicate):
            a = self.alias("t")
            conditions = [f"{a}.param = {self.arg(p.param)}"]
            if p.code is not None:
                conditions.append(f"{a}.code = {self.arg(cut(p.code))}")
            if p.system == "":
                conditions.append(f"{a}.system IS NULL")
            elif p.system is not None:
                conditions.append(f"{a}.system = {self.arg(cut(p.system))}")
            return "idx_token", a, " AND ".join(conditions)
        if isinstance(p, DatePredicate):
            a = self.alias("d")
            test = self._date_test(f"{a}.low", f"{a}.high", p.prefix, p.low, p.high)
            return "idx_date", a, f"{a}.param = {self.arg(p.param)} AND {test}"
        if isinstance(p, NumberPredicate):
            a = self.alias("n")
            conditions = [f"{a}.param = {self.arg(p.param)}", self._number_test(a, p)]
            if p.system is not None:
                conditions.append(f"{a}.system = {self.arg(p.system)}")
            if p.code is not None:
                if p.system is not None:
                    conditions.append(f"{a}.code = {self.arg(p.code)}")
                else:
                    # `[number]||[code]` matches the unit code or display (search.html#quantity)
                    code = self.arg(p.code)
                    conditions.append(f"({a}.code = {code} OR {a}.unit = {code})")
            return "idx_number", a, " AND ".join(conditions)
        if isinstance(p, ReferencePredicate):
            a = self.alias("f")
            local = []
            if p.url is not None:
                local.append(f"{a}.url = {self.arg(cut(p.url))}")
            if p.target_id is not None:
                local.append(f"{a}.target_id = {self.arg(p.target_id)}")
            if p.target_type is not None:
                local.append(f"{a}.target_type = {self.arg(p.target_type)}")
            target = " AND ".join(local) or "1 = 1"
            if p.absolute:
                # The same target written as an absolute URL on this server.
                urls = ", ".join(self.arg(cut(url)) for url in p.absolute)
                target = f"(({target}) OR {a}.url IN ({urls}))"
            return "idx_reference", a, f"{a}.param = {self.arg(p.param)} AND {target}"
        if isinstance(p, UriPredicate):
            a = self.alias("u")
            param = f"{a}.param = {self.arg(p.param)}"
            if p.mode == "below":
                condition = (
                    f"{a}.value >= {self.arg(cut(p.value))} AND {a}.value < "
                    f"{self.arg(cut(p.value) + _STRING_END)}"
                )
            elif p.mode == "above":
                condition = f"substr({self.arg(p.value)}, 1, length({a}.value)) = {a}.value"
            else:
                condition = f"{a}.value = {self.arg(cut(p.value))}"
            return "idx_uri", a, f"{param} AND {condition}"
        raise TypeError(f"no index row for {p!r}")

    def _date_test(self, low: str, high: str, prefix: str, lo: datetime, hi: datetime) -> str:
        """Stored range [low, high) against the search range [lo, hi)."""
        return self._condition(low, high, date_condition(prefix, to_micros(lo), to_micros(hi)))

    def _number_test(self, a: str, p: NumberPredicate) -> str:
        """Stored [low, high] against the value and its precision range [p.low, p.high)."""
        condition = number_condition(p.prefix, p.value, p.low, p.high)
        return self._condition(f"{a}.low", f"{a}.high", condition)

    def _condition(self, low: str, high: str, condition: Condition[Any]) -> str:
        """A prefix's condition (search.html#prefix, `search/prefixes.py`) on the stored
        range between the SQL expressions `low` and `high`."""
        columns = {"low": low, "high": high}
        terms = [f"{columns[end]} {op} {self.arg(bound)}" for end, op, bound in condition.terms]
        test = " AND ".join(terms)
        return f"NOT ({test})" if condition.negated else test

    # --- sorting and paging -----------------------------------------------------------

    def sort_expression(self, key: SortKey) -> str:
        """One sortable value per resource; missing values sort last either way."""
        if key.param == "_id":
            return "r.id"
        if key.param == "_lastUpdated":
            return "v.last_updated"
        table = table_of(key.kind)
        column = {
            "string": "norm",
            "token": "code",
            "reference": "coalesce(target_type || '/' || target_id, url)",
            "uri": "value",
        }.get(key.kind, "high" if key.descending else "low")
        aggregate = "max" if key.descending else "min"
        missing: Any
        if key.kind in ("date",):
            missing = MIN_MICROS if key.descending else MAX_MICROS
        elif key.kind in ("number", "quantity"):
            missing = -1e308 if key.descending else 1e308
        else:
            missing = "" if key.descending else _STRING_END
        param = self.arg(key.param)
        return (
            f"coalesce((SELECT {aggregate}({column}) FROM {table} k "
            f"WHERE k.seq = r.seq AND k.param = {param}), {self.arg(missing)})"
        )


def _selective(p: Predicate) -> int | None:
    """How likely a predicate's index rows are to be few (0 likeliest), or None when
    they are not few enough to start from."""
    if isinstance(p, ReferencePredicate) and p.target_id is not None:
        return 0
    if isinstance(p, TokenPredicate) and not p.negate and p.code is not None:
        return 1
    if (isinstance(p, StringPredicate) and p.mode != "contains") or (
        isinstance(p, UriPredicate) and p.mode == "exact"
    ):
        return 2
    return None


def _driver(query: SearchQuery) -> tuple[Predicate, ...] | None:
    """The clause to start a single-type search from: the one likeliest to have the
    fewest index rows (a reference to one target, then an exact code, then a string or
    uri). Without statistics SQLite cannot know; the others are tested per resource."""
    if len(query.resource_types) != 1:
        return None
    ranked = [
        (rank, clause)
        for clause in query.clauses
        if len(clause) == 1 and (rank := _selective(clause[0])) is not None
    ]
    return min(ranked, key=lambda pair: pair[0])[1] if ranked else None


@dataclass(frozen=True)
class CompiledSearch:
    sql: str
    args: dict[str, Any]
    # How many sort-key columns precede the version columns in each row.
    keys: int


def compile_index_rows(
    predicate: Predicate, resource_type: str, cap: int
) -> tuple[str, dict[str, Any]]:
    """How many index rows of `resource_type` a selective predicate has, counted up to
    `cap`. Read from the covering index: a few hundred microseconds for a cap of
    thousands."""
    compiler = Compiler()
    seqs = compiler._seqs(predicate, resource_type)
    return f"SELECT count(*) FROM ({seqs} LIMIT {compiler.arg(cap)})", compiler.args


def compile_page(
    query: SearchQuery,
    limit: int,
    after: list[Any] | None,
    backwards: bool,
    dense: Dense = never_dense,
) -> CompiledSearch:
    """The matches of one page: sort keys (ending with type and id), then the version."""
    compiler = Compiler(dense=dense)
    keys = [*query.sort, SortKey("_type_"), SortKey("_id")]
    expressions = [
        "r.type" if key.param == "_type_" else compiler.sort_expression(key) for key in keys
    ]
    directions = [key.descending != backwards for key in keys]
    source, where = compiler.where(query)
    if after is not None:
        if len(after) != len(keys):
            raise BadRequest("The paging cursor does not fit this search", expression="_cursor")
        where += " AND " + _after(compiler, expressions, directions, after)
    columns = ", ".join(f"{e} AS k{n}" for n, e in enumerate(expressions))
    order = ", ".join(f"k{n} {'DESC' if d else 'ASC'}" for n, d in enumerate(directions))
    sql = (
        f"SELECT {columns}, {VERSION_COLUMNS} FROM {source} WHERE {where} "
        f"ORDER BY {order} LIMIT {compiler.arg(limit)}"
    )
    return CompiledSearch(sql, compiler.args, len(keys))


def _after(
    compiler: Compiler, expressions: list[str], directions: list[bool], values: list[Any]
) -> str:
    """Rows strictly after `values` in the sort order: a keyset boundary."""
    alternatives = []
    for n in range(len(expressions)):
        terms = []
        for m in range(n + 1):
            operator = "=" if m < n else ("<" if directions[m] else ">")
            terms.append(f"{expressions[m]} {operator} {compiler.arg(values[m])}")
        alternatives.append("(" + " AND ".join(terms) + ")")
    return "(" + " OR ".join(alternatives) + ")"


def compile_count(query: SearchQuery) -> tuple[str, dict[str, Any]]:
    compiler = Compiler()
    source, where = compiler.where(query)
    return f"SELECT count(*) FROM {source} WHERE {where}", compiler.args


def compile_matches(query: SearchQuery, limit: int) -> tuple[str, dict[str, Any]]:
    """Unsorted matches, for conditional interactions."""
    compiler = Compiler()
    source, where = compiler.where(query)
    return (
        f"SELECT {VERSION_COLUMNS} FROM {source} WHERE {where} LIMIT {compiler.arg(limit)}",
        compiler.args,
    )
