"""EXPLAIN QUERY PLAN of the SQL fhirserver runs for a search, and what is wrong with it.

`search_statements` gives the statements one search runs: the page query from
`compile_page` (parsed by `parse_search`, as SqliteStore.search does) and, when the search
has `_include`, the statements `find_includes` runs for that page (caught with a trace
callback). `problems` reads a plan and names, per step:

- full scan: `SCAN` of resources, versions or an idx_* table with no index at all;
- full index scan: `SCAN ... USING [COVERING] INDEX`, every entry of the index read;
- unpinned probe: a correlated subquery (run once per outer row) that searches an idx_*
  table by value or parameter rather than by the resource it is correlated with, so each
  outer row costs as many index entries as the value has;
- unselective index search: an idx_* table searched by type and parameter alone (no id,
  target or value), so every entry of that parameter is read;
- type-wide walk: the outer loop is `resources` by `(type=?)` alone, so every current
  resource of the searched type is visited and tested, however selective the criteria.

The first is what the issue forbids outright; the others are where the time goes.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhirserver.search.parse import parse_search
from fhirserver.search.time import from_micros
from fhirserver.storage.base import Version
from fhirserver.storage.sqlite.includes import find_includes
from fhirserver.storage.sqlite.schema import INDEX_TABLES
from fhirserver.storage.sqlite.search import compile_page

TABLES = frozenset({"resources", "versions", *(table for table, _ in INDEX_TABLES.values())})
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+AS)?\s+(\w+)", re.IGNORECASE)
# `a.seq = b.seq`, `a.target_id = b.id`, `a.id = b.target_id`: alias a is looked up by
# column.
_CORRELATION = re.compile(r"\b(\w+)\.(seq|id|target_id) = (\w+)\.(?:seq|id|target_id)\b")
_SCAN = re.compile(r"^SCAN (?:TABLE )?(\w+)(?: AS (\w+))?(.*)$")
_SEARCH = re.compile(r"^SEARCH (?:TABLE )?(\w+)(?: AS (\w+))? USING (.*?)(?: \((.*)\))?$")


@dataclass(frozen=True, slots=True)
class Step:
    id: int
    parent: int
    detail: str


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement a search runs, with its arguments and where it comes from."""

    origin: str
    sql: str
    args: dict[str, Any] | Sequence[Any]


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    step: Step


def explain(connection: sqlite3.Connection, statement: Statement) -> list[Step]:
    rows = connection.execute(f"EXPLAIN QUERY PLAN {statement.sql}", statement.args).fetchall()
    return [Step(row[0], row[1], row[3]) for row in rows]


def search_statements(
    connection: sqlite3.Connection, resource_type: str, params: list[tuple[str, str]]
) -> list[Statement]:
    """The page query fhirserver compiles for this search, then its include queries."""
    query = parse_search((resource_type,), params)
    page = compile_page(query, query.count + 1, None, False)
    statements = [Statement("compile_page", page.sql, page.args)]
    if query.includes:
        rows = connection.execute(page.sql, page.args).fetchall()[: query.count]
        matches = [_version(row[page.keys :]) for row in rows]
        traced: list[str] = []
        connection.set_trace_callback(traced.append)
        try:
            find_includes(connection, query.includes, matches, query.max_included)
        finally:
            connection.set_trace_callback(None)
        # The trace shows each statement with its arguments inlined.
        statements += [Statement("find_includes", sql, ()) for sql in traced]
    return statements


def _version(row: Sequence[Any]) -> Version:
    seq, resource_type, resource_id, version, last_updated, method, body = row
    return Version(
        resource_type, resource_id, version, from_micros(last_updated), method, body, seq
    )


def aliases(sql: str) -> dict[str, str]:
    """Alias (or bare table name) -> table, for the store's tables named in `sql`."""
    found = {table: table for table in TABLES}
    for table, alias in _FROM.findall(sql):
        if table in TABLES:
            found[alias] = table
    return found


def correlations(sql: str) -> dict[str, str]:
    """Alias -> the column by which a correlated subquery looks that alias up."""
    return {alias: column for alias, column, outer in _CORRELATION.findall(sql) if alias != outer}


def _under_correlated(step: Step, by_id: dict[int, Step]) -> bool:
    parent = by_id.get(step.parent)
    while parent is not None:
        if parent.detail.startswith("CORRELATED"):
            return True
        parent = by_id.get(parent.parent)
    return False


def _columns(constraint: str) -> set[str]:
    """The columns an index search constrains: `type=? AND norm>?` -> {type, norm}."""
    return set(re.findall(r"(\w+)[=<>]", constraint))


def problems(steps: list[Step], sql: str) -> list[Problem]:
    """What is wrong with the plan `steps` of `sql` (the kinds in this module's docstring)."""
    tables, pins = aliases(sql), correlations(sql)
    by_id = {step.id: step for step in steps}
    found: list[Problem] = []
    for step in steps:
        scan = _SCAN.match(step.detail)
        if scan is not None:
            if (scan.group(2) or scan.group(1)) in tables:
                using = re.search(r"USING (?:COVERING )?INDEX|PRIMARY KEY", scan.group(3))
                found.append(Problem("full index scan" if using else "full scan", step))
            continue
        search = _SEARCH.match(step.detail)
        if search is None:
            continue
        name, constraint = search.group(2) or search.group(1), search.group(4) or ""
        table, columns = tables.get(name), _columns(constraint)
        correlated = _under_correlated(step, by_id)
        if table == "resources" and columns == {"type"} and not correlated:
            found.append(Problem("type-wide walk", step))
        if table is None or not table.startswith("idx_"):
            continue
        if columns <= {"type", "param", "target_type"}:
            found.append(Problem("unselective index search", step))
        elif correlated and name in pins and pins[name] not in columns:
            found.append(Problem("unpinned probe", step))
    return found
