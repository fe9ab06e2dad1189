"""Tables of the SQLite store, and how a connection to it is opened."""

from __future__ import annotations

import sqlite3

from fhirserver.search.time import from_micros, to_micros

__all__ = [
    "INDEX_TABLES",
    "SCHEMA",
    "VERSION_COLUMNS",
    "connect",
    "from_micros",
    "table_of",
    "to_micros",
]

# Index entries of current, non-deleted versions, one table per parameter type. `grp`
# ties the components of one composite element together (NULL elsewhere).
INDEX_TABLES = {
    "string": ("idx_string", ("norm", "exact")),
    "token": ("idx_token", ("system", "code")),
    "date": ("idx_date", ("low", "high")),
    "number": ("idx_number", ("low", "high", "system", "code", "unit")),
    "reference": ("idx_reference", ("target_type", "target_id", "url")),
    "uri": ("idx_uri", ("value",)),
}


def table_of(kind: str) -> str:
    """The index table of a parameter type; quantities live with numbers."""
    return INDEX_TABLES["number" if kind == "quantity" else kind][0]


SCHEMA = """
-- Index tables have one index by value (to find resources) and one by resource (to test
-- or sort one resource), each covering the columns its lookups read: SQLite, which has
-- no statistics before ANALYZE, then picks the right one for each use. Not the
-- by-resource one of references: the by-target one must win for _has and _revinclude.
DROP INDEX IF EXISTS idx_string_value;
DROP INDEX IF EXISTS idx_token_value;
DROP INDEX IF EXISTS idx_date_value;
DROP INDEX IF EXISTS idx_number_value;
DROP INDEX IF EXISTS idx_uri_value;
DROP INDEX IF EXISTS idx_reference_target;
DROP INDEX IF EXISTS idx_string_resource;
DROP INDEX IF EXISTS idx_token_resource;
DROP INDEX IF EXISTS idx_date_resource;
DROP INDEX IF EXISTS idx_number_resource;
DROP INDEX IF EXISTS idx_uri_resource;

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

CREATE TABLE IF NOT EXISTS idx_string (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    norm TEXT NOT NULL, exact TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_string_by_value ON idx_string (type, param, norm, id);
CREATE INDEX IF NOT EXISTS idx_string_by_resource ON idx_string (type, id, param, norm);

CREATE TABLE IF NOT EXISTS idx_token (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    system TEXT, code TEXT
);
CREATE INDEX IF NOT EXISTS idx_token_by_value ON idx_token (type, param, code, system, id);
CREATE INDEX IF NOT EXISTS idx_token_by_resource ON idx_token (type, id, param, code, system);

CREATE TABLE IF NOT EXISTS idx_date (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    low INTEGER NOT NULL, high INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_date_by_value ON idx_date (type, param, low, high, id);
CREATE INDEX IF NOT EXISTS idx_date_by_resource ON idx_date (type, id, param, low, high);

CREATE TABLE IF NOT EXISTS idx_number (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    low REAL NOT NULL, high REAL NOT NULL, system TEXT, code TEXT, unit TEXT
);
CREATE INDEX IF NOT EXISTS idx_number_by_value ON idx_number (type, param, low, high, id);
CREATE INDEX IF NOT EXISTS idx_number_by_resource ON idx_number (type, id, param, low, high);

CREATE TABLE IF NOT EXISTS idx_reference (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    target_type TEXT, target_id TEXT, url TEXT
);
CREATE INDEX IF NOT EXISTS idx_reference_by_target
    ON idx_reference (target_id, target_type, param, type, id);
CREATE INDEX IF NOT EXISTS idx_reference_resource ON idx_reference (type, id, param);
CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (url) WHERE url IS NOT NULL;

CREATE TABLE IF NOT EXISTS idx_uri (
    type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_uri_by_value ON idx_uri (type, param, value, id);
CREATE INDEX IF NOT EXISTS idx_uri_by_resource ON idx_uri (type, id, param, value);
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
