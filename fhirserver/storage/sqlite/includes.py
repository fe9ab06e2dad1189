"""`_include` and `_revinclude` (R4 search.html#include): the resources a page of matches
refers to, or is referred to by, followed again for `:iterate`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from fhirserver.search.query import Include
from fhirserver.storage.base import MAX_INCLUDE_ROUNDS, MAX_INCLUDED, Version
from fhirserver.storage.sqlite.schema import VERSION_COLUMNS

Key = tuple[str, str]


def find_includes(
    connection: sqlite3.Connection, includes: Sequence[Include], matches: Sequence[Version]
) -> list[tuple[Any, ...]]:
    if not includes or not matches:
        return []
    seen: set[Key] = {(m.resource_type, m.id) for m in matches}
    frontier = sorted(seen)
    found: list[tuple[Any, ...]] = []
    for round_number in range(MAX_INCLUDE_ROUNDS):
        active = [i for i in includes if round_number == 0 or i.iterate]
        if not active or not frontier:
            break
        keys: set[Key] = set()
        for include in active:
            keys.update(_targets(connection, include, frontier))
        new = sorted(keys - seen)[: MAX_INCLUDED - len(found)]
        seen.update(new)
        rows = _current(connection, new)
        found.extend(rows)
        frontier = [(row[1], row[2]) for row in rows]
    return found


def _targets(connection: sqlite3.Connection, include: Include, frontier: list[Key]) -> set[Key]:
    found: set[Key] = set()
    for resource_type in sorted({t for t, _ in frontier}):
        ids = [i for t, i in frontier if t == resource_type]
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            if include.reverse:
                if include.target_type not in (None, resource_type):
                    continue
                sql = (
                    "SELECT type, id FROM idx_reference WHERE target_type = ? "
                    f"AND target_id IN ({marks})"
                )
                args: list[Any] = [resource_type, *chunk]
                if include.source_type != "*":
                    sql += " AND type = ?"
                    args.append(include.source_type)
            else:
                if include.source_type not in ("*", resource_type):
                    continue
                sql = (
                    "SELECT target_type, target_id FROM idx_reference WHERE type = ? "
                    f"AND id IN ({marks}) AND target_id IS NOT NULL"
                )
                args = [resource_type, *chunk]
                if include.target_type is not None:
                    sql += " AND target_type = ?"
                    args.append(include.target_type)
            if include.param != "*":
                sql += " AND param = ?"
                args.append(include.param)
            found.update(connection.execute(sql, args).fetchall())
    return found


def _current(connection: sqlite3.Connection, keys: list[Key]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for resource_type in sorted({t for t, _ in keys}):
        ids = [i for t, i in keys if t == resource_type]
        for chunk in _chunks(ids):
            marks = ", ".join("?" * len(chunk))
            rows.extend(
                connection.execute(
                    f"SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v ON v.seq = r.seq "
                    f"WHERE r.type = ? AND r.id IN ({marks}) AND v.body IS NOT NULL "
                    "ORDER BY r.id",
                    [resource_type, *chunk],
                ).fetchall()
            )
    return rows


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
