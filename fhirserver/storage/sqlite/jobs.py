"""Jobs in and out of the SQLite `jobs` table (DESIGN.md "Scale-out").

A claim, finish or retry is one statement, hence one transaction: picking a job and
leasing it cannot be split by another connection to the file, in this process or another.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from fhirserver.search.time import from_micros, to_micros
from fhirserver.storage.base import Job

_COLUMNS = "kind, key, due, payload, attempts, owner, lease_until"
# A claim is identified by the owner and lease it was taken with: after a takeover or a
# put_job (which clears the lease) they no longer match, and the old holder's call fails.
_HELD = "kind = ? AND key = ? AND owner = ? AND lease_until = ?"


def _job(row: tuple[Any, ...]) -> Job:
    kind, key, due, payload, attempts, owner, lease_until = row
    lease = None if lease_until is None else from_micros(lease_until)
    return Job(kind, key, from_micros(due), payload, attempts, owner, lease)


def _held(job: Job) -> tuple[Any, ...]:
    lease = None if job.lease_until is None else to_micros(job.lease_until)
    return job.kind, job.key, job.owner, lease


def write_jobs(connection: sqlite3.Connection, jobs: Mapping[tuple[str, str], Job | None]) -> None:
    """Put the jobs given, and drop the (kind, key) pairs mapped to None."""
    # REPLACE leaves owner and lease_until NULL: a job put again is free to claim.
    connection.executemany(
        "INSERT OR REPLACE INTO jobs (kind, key, due, payload, attempts) VALUES (?, ?, ?, ?, ?)",
        [
            (job.kind, job.key, to_micros(job.due), job.payload, job.attempts)
            for job in jobs.values()
            if job is not None
        ],
    )
    connection.executemany(
        "DELETE FROM jobs WHERE kind = ? AND key = ?",
        [key for key, job in jobs.items() if job is None],
    )


def _claimable(kinds: Sequence[str], now: datetime) -> tuple[str, tuple[Any, ...]]:
    """The jobs of `kinds` due at `now` and not leased: a WHERE clause and its values."""
    at = to_micros(now)
    return (
        f"due <= ? AND kind IN ({', '.join('?' * len(kinds))}) "
        "AND (lease_until IS NULL OR lease_until <= ?)",
        (at, *kinds, at),
    )


def any_claimable(connection: sqlite3.Connection, kinds: Sequence[str], now: datetime) -> bool:
    where, values = _claimable(kinds, now)
    return (
        connection.execute(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", values).fetchone()
        is not None
    )


def claim(
    connection: sqlite3.Connection,
    kinds: Sequence[str],
    owner: str,
    now: datetime,
    lease: timedelta,
) -> Job | None:
    where, values = _claimable(kinds, now)
    # fetchall: the statement, and with it its transaction, ends only when stepped to the end.
    rows = connection.execute(
        "UPDATE jobs SET owner = ?, lease_until = ? WHERE rowid = ("
        f"SELECT rowid FROM jobs WHERE {where} ORDER BY due LIMIT 1) RETURNING {_COLUMNS}",
        (owner, to_micros(now + lease), *values),
    ).fetchall()
    return _job(rows[0]) if rows else None


def finish(connection: sqlite3.Connection, job: Job) -> bool:
    return connection.execute(f"DELETE FROM jobs WHERE {_HELD}", _held(job)).rowcount == 1


def retry(connection: sqlite3.Connection, job: Job, due: datetime) -> bool:
    cursor = connection.execute(
        "UPDATE jobs SET due = ?, attempts = attempts + 1, owner = NULL, lease_until = NULL "
        f"WHERE {_HELD}",
        (to_micros(due), *_held(job)),
    )
    return cursor.rowcount == 1
