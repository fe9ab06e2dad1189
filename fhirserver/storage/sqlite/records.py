"""Keyed records in the SQLite `records` table (storage/base.py `Record`).

Every change is one statement, hence one transaction: an insert-if-absent
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`), a read-and-delete
(`DELETE ... RETURNING`) or a compare-and-set (`UPDATE ... WHERE body = ?`) cannot be
split by another connection to the file, in this process or another. Bodies are stored
with their keys sorted, so that equal bodies are equal bytes to compare.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

import orjson

from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Record

# Unexpired at `now` (the one argument it takes).
_LIVE = "(expires IS NULL OR expires > ?)"
# Expired rows removed per write: bounded, so no write waits on a large purge.
_PURGE_BATCH = 100


def _micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _body(raw: bytes) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(raw)
    return body


def put(
    connection: sqlite3.Connection,
    kind: str,
    key: str,
    body: dict[str, Any],
    expires: datetime | None,
) -> None:
    connection.execute(
        "INSERT OR REPLACE INTO records (kind, key, body, expires) VALUES (?, ?, ?, ?)",
        (kind, key, _json(body), _micros(expires)),
    )


def get(
    connection: sqlite3.Connection, kind: str, key: str, now: datetime
) -> dict[str, Any] | None:
    row = connection.execute(
        f"SELECT body FROM records WHERE kind = ? AND key = ? AND {_LIVE}",
        (kind, key, to_micros(now)),
    ).fetchone()
    return None if row is None else _body(row[0])


def listed(connection: sqlite3.Connection, kind: str, now: datetime) -> list[Record]:
    rows = connection.execute(
        f"SELECT key, body, expires FROM records WHERE kind = ? AND {_LIVE} ORDER BY key",
        (kind, to_micros(now)),
    ).fetchall()
    return [
        Record(kind, key, _body(body), None if expires is None else from_micros(expires))
        for key, body, expires in rows
    ]


def delete(
    connection: sqlite3.Connection, kind: str, key: str, only_if: dict[str, Any] | None
) -> bool:
    if only_if is None:
        cursor = connection.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
    else:
        cursor = connection.execute(
            "DELETE FROM records WHERE kind = ? AND key = ? AND body = ?",
            (kind, key, _json(only_if)),
        )
    return cursor.rowcount == 1


def replace(
    connection: sqlite3.Connection,
    kind: str,
    key: str,
    expected: dict[str, Any],
    body: dict[str, Any],
    expires: datetime | None,
    now: datetime,
) -> bool:
    cursor = connection.execute(
        f"UPDATE records SET body = ?, expires = ? WHERE kind = ? AND key = ? AND body = ? "
        f"AND {_LIVE}",
        (_json(body), _micros(expires), kind, key, _json(expected), to_micros(now)),
    )
    return cursor.rowcount == 1


def add(
    connection: sqlite3.Connection,
    kind: str,
    key: str,
    body: dict[str, Any],
    expires: datetime | None,
    now: datetime,
) -> bool:
    at = to_micros(now)
    _purge(connection, at)
    # An existing row is replaced only when it has expired; otherwise nothing changes
    # and the statement reports no row.
    cursor = connection.execute(
        "INSERT INTO records (kind, key, body, expires) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, expires = excluded.expires "
        "WHERE records.expires IS NOT NULL AND records.expires <= ?",
        (kind, key, _json(body), _micros(expires), at),
    )
    return cursor.rowcount == 1


def take(
    connection: sqlite3.Connection, kind: str, key: str, now: datetime
) -> dict[str, Any] | None:
    # fetchall: the statement, and with it its transaction, ends only when stepped to the end.
    rows = connection.execute(
        f"DELETE FROM records WHERE kind = ? AND key = ? AND {_LIVE} RETURNING body",
        (kind, key, to_micros(now)),
    ).fetchall()
    return _body(rows[0][0]) if rows else None


def _purge(connection: sqlite3.Connection, at: int) -> None:
    """Drop a few expired records (seen `jti`s, used codes pile up otherwise)."""
    connection.execute(
        "DELETE FROM records WHERE (kind, key) IN (SELECT kind, key FROM records "
        "WHERE expires IS NOT NULL AND expires <= ? LIMIT ?)",
        (at, _PURGE_BATCH),
    )
