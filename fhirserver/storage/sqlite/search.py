"""Compile a SearchQuery to SQL over the `resources` / `versions` / index tables."""

from __future__ import annotations

from typing import Any

from fhirserver.search.query import (
    ID,
    LAST_UPDATED,
    DatePredicate,
    Predicate,
    SearchQuery,
    TokenPredicate,
)
from fhirserver.storage.sqlite.schema import VERSION_COLUMNS, to_micros

# A point value t against the search range [low, high) (R4 search.html#prefix).
_POINT_IN_RANGE = {
    "eq": "({col} >= ? AND {col} < ?)",
    "ne": "NOT ({col} >= ? AND {col} < ?)",
    "gt": "{col} >= ?",
    "sa": "{col} >= ?",
    "ge": "{col} >= ?",
    "lt": "{col} < ?",
    "eb": "{col} < ?",
    "le": "{col} < ?",
}


def compile_search(query: SearchQuery, limit: int) -> tuple[str, list[Any]]:
    where = ["r.type = ?", "v.body IS NOT NULL"]
    args: list[Any] = [query.resource_type]
    for clause in query.clauses:
        parts = []
        for predicate in clause:
            sql, predicate_args = _predicate(predicate)
            parts.append(sql)
            args.extend(predicate_args)
        where.append("(" + " OR ".join(parts) + ")")
    sql = (
        f"SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v ON v.seq = r.seq "
        f"WHERE {' AND '.join(where)} ORDER BY r.id LIMIT ?"
    )
    return sql, [*args, limit]


def _predicate(predicate: Predicate) -> tuple[str, list[Any]]:
    if isinstance(predicate, TokenPredicate):
        if predicate.param == ID:
            return "r.id = ?", [predicate.code]
        return _token(predicate)
    if predicate.param == LAST_UPDATED:
        return _date_point("v.last_updated", predicate)
    raise ValueError(f"no SQL for {predicate!r}")


def _token(predicate: TokenPredicate) -> tuple[str, list[Any]]:
    conditions = ["t.type = r.type", "t.id = r.id", "t.param = ?"]
    args: list[Any] = [predicate.param]
    if predicate.code is not None:
        conditions.append("t.code = ?")
        args.append(predicate.code)
    if predicate.system == "":
        conditions.append("t.system IS NULL")
    elif predicate.system is not None:
        conditions.append("t.system = ?")
        args.append(predicate.system)
    return f"EXISTS (SELECT 1 FROM token_index t WHERE {' AND '.join(conditions)})", args


def _date_point(column: str, predicate: DatePredicate) -> tuple[str, list[Any]]:
    template = _POINT_IN_RANGE[predicate.prefix]
    low, high = to_micros(predicate.low), to_micros(predicate.high)
    if predicate.prefix in ("eq", "ne"):
        args = [low, high]
    elif predicate.prefix in ("gt", "sa", "le"):
        args = [high]
    else:
        args = [low]
    return template.format(col=column), args
