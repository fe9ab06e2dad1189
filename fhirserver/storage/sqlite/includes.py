"""`_include` and `_revinclude` (R4 search.html#include) over `idx_reference`: the
SQLite lookups the shared rounds (`storage/includes.py`) ask for, run in the search's
own read transaction on its connection's thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from fhirserver.search.query import Include
from fhirserver.storage.base import Version
from fhirserver.storage.includes import Included, Key, follow_includes
from fhirserver.storage.sqlite.schema import VERSION_COLUMNS, version_of

T = TypeVar("T")


def find_includes(
    connection: sqlite3.Connection,
    includes: Sequence[Include],
    matches: Sequence[Version],
    limit: int,
) -> Included[Version]:
    async def reach(include: Include, frontier: list[Version]) -> set[Key]:
        return _targets(connection, include, frontier)

    async def load(keys: list[Key]) -> list[Version]:
        return _current(connection, keys)

    return _completed(follow_includes(includes, matches, _key, reach, load, limit))


def _completed(rounds: Coroutine[Any, Any, T]) -> T:
    """The result of the shared rounds, run to their end on this thread. The lookups
    they await are the plain calls above, so they never suspend: one step runs them
    through, without an event loop (the reader threads have none), and inside the
    search's snapshot."""
    try:
        rounds.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    rounds.close()
    raise RuntimeError("the include rounds suspended; the SQLite lookups never should")


def _key(version: Version) -> Key:
    return version.resource_type, version.id


def _targets(connection: sqlite3.Connection, include: Include, frontier: list[Version]) -> set[Key]:
    """Index rows are keyed by the seq of the version they index, and every version of
    the frontier is current (a match, or included as current)."""
    found: set[Key] = set()
    for resource_type in sorted({v.resource_type for v in frontier}):
        of_type = [v for v in frontier if v.resource_type == resource_type]
        for chunk in _chunks(of_type):
            args: list[Any]
            if include.reverse:
                if include.target_type not in (None, resource_type):
                    continue
                marks = ", ".join("?" * len(chunk))
                sql = (
                    "SELECT v.type, v.id FROM idx_reference k JOIN versions v ON v.seq = k.seq "
                    f"WHERE k.target_type = ? AND k.target_id IN ({marks})"
                )
                args = [resource_type, *(v.id for v in chunk)]
                if include.source_type != "*":
                    sql += " AND k.type = ?"
                    args.append(include.source_type)
            else:
                if include.source_type not in ("*", resource_type):
                    continue
                marks = ", ".join("?" * len(chunk))
                sql = (
                    "SELECT k.target_type, k.target_id FROM idx_reference k "
                    f"WHERE k.seq IN ({marks}) AND k.target_id IS NOT NULL"
                )
                args = [v.seq for v in chunk]
                if include.target_type is not None:
                    sql += " AND k.target_type = ?"
                    args.append(include.target_type)
            if include.param != "*":
                sql += " AND k.param = ?"
                args.append(include.param)
            found.update(connection.execute(sql, args).fetchall())
    return found


def _current(connection: sqlite3.Connection, keys: list[Key]) -> list[Version]:
    """The current, not deleted, versions of these resources, in (type, id) order."""
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
    return [version_of(row) for row in rows]


def _chunks(items: list[T], size: int = 500) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
