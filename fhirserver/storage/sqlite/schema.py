"""Tables of the SQLite store, and how a connection to it is opened."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

SCHEMA = """
-- Every version of every resource. It is also the change log: `seq` increases with
-- every write and is never reused (AUTOINCREMENT), so consumers can keep a cursor.
CREATE TABLE IF NOT EXISTS versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,  -- microseconds since 1970-01-01T00:00:00Z
    method TEXT NOT NULL,
    body BLOB,                      -- NULL for a deletion
    UNIQUE (type, id, version)
);
CREATE INDEX IF NOT EXISTS versions_by_type ON versions (type, seq);
CREATE INDEX IF NOT EXISTS versions_by_time ON versions (last_updated);

-- The current version of each resource (a deleted one points at its tombstone).
CREATE TABLE IF NOT EXISTS resources (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL REFERENCES versions (seq),
    PRIMARY KEY (type, id)
) WITHOUT ROWID;

-- Token index values of current, non-deleted versions.
CREATE TABLE IF NOT EXISTS token_index (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    param TEXT NOT NULL,
    system TEXT,
    code TEXT
);
CREATE INDEX IF NOT EXISTS token_index_by_value ON token_index (type, param, code, system);
CREATE INDEX IF NOT EXISTS token_index_by_resource ON token_index (type, id);
"""

VERSION_COLUMNS = "v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body"


def connect(path: str, synchronous: str, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and ended explicitly.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    connection.execute("PRAGMA foreign_keys=OFF")
    return connection


def to_micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
