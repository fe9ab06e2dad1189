"""Tables of the SQLite store, and how a connection to it is opened."""

from __future__ import annotations

import sqlite3
from typing import Any

from fhirserver.search.time import from_micros
from fhirserver.storage.base import Version

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


# Bumped when the tables change; an older file gets fresh (empty) index tables, and the
# app rebuilds their content from the stored resources at start-up.
# 4: index values cut to INDEX_CUT characters (search/extract.py).
# 5: composite groups indexed only when every component has a value.
# 6: index rows keyed by the seq of the version they index, not by (type, id).
SCHEMA_VERSION = 6

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

-- Work to do later, leased to one worker at a time (DESIGN.md "Scale-out"). Here, not
-- with the index tables: its rows are the only record of the work, so upgrades keep it.
CREATE TABLE IF NOT EXISTS jobs (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    due INTEGER NOT NULL,           -- microseconds since 1970-01-01T00:00:00Z
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    owner TEXT,                     -- with lease_until, NULL while nobody holds the job
    lease_until INTEGER,
    PRIMARY KEY (kind, key)
);
-- A claim walks the due jobs from the oldest and stops at the first one it may take:
-- jobs not due yet are never read, and held ones are few (one per busy worker).
CREATE INDEX IF NOT EXISTS jobs_by_due ON jobs (due);

-- Keyed records of the authorization server (storage/base.py Record); like jobs, the
-- only copy of what they hold, so upgrades keep them.
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body BLOB NOT NULL,             -- JSON
    expires INTEGER,                -- microseconds since 1970-01-01T00:00:00Z; NULL: never
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
-- Expired records are purged by a range delete from the oldest.
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires) WHERE expires IS NOT NULL;
"""

# Index tables: clustered by the seq of the current version they index (the primary key:
# seq, param, then the entry's number n), which serves per-resource tests and sorting; a
# secondary index by value finds resources (and carries the key, so it covers seq). Two
# B-trees an entry. Keyed by seq rather than by (type, id): a new version's seq is the
# highest yet, so its rows are appended at the right edge of the primary key instead of
# landing at random places in it, and each row is about 40 bytes shorter than with a
# 36-character id in both B-trees. Inserting the Synthea set's index rows ten times over
# ran at 6,457 resources/s against 1,979 keyed by (type, id), falling from 8,434 to 5,400
# (first copy to last) against 4,068 to 1,738, in a store 490 MiB against 737. A match
# found by value is one seq, which is the versions table's own key.
INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS idx_string (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, norm TEXT NOT NULL, exact TEXT NOT NULL,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_string_by_value ON idx_string (type, param, norm);

CREATE TABLE IF NOT EXISTS idx_token (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, system TEXT, code TEXT,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_token_by_value ON idx_token (type, param, code, system);

CREATE TABLE IF NOT EXISTS idx_date (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, low INTEGER NOT NULL, high INTEGER NOT NULL,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_date_by_value ON idx_date (type, param, low, high);

CREATE TABLE IF NOT EXISTS idx_number (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, low REAL NOT NULL, high REAL NOT NULL, system TEXT, code TEXT, unit TEXT,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_number_by_value ON idx_number (type, param, low, high);

CREATE TABLE IF NOT EXISTS idx_reference (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, target_type TEXT, target_id TEXT, url TEXT,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_reference_by_target
    ON idx_reference (target_id, target_type, param, type);
CREATE INDEX IF NOT EXISTS idx_reference_by_url ON idx_reference (url) WHERE url IS NOT NULL;

CREATE TABLE IF NOT EXISTS idx_uri (
    seq INTEGER NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, n INTEGER NOT NULL,
    grp INTEGER, value TEXT NOT NULL,
    PRIMARY KEY (seq, param, n)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_uri_by_value ON idx_uri (type, param, value);
"""

# Tables of earlier schema versions, dropped when a file is upgraded.
_OLD_INDEX_TABLES = ("token_index",)


def create_schema(connection: sqlite3.Connection) -> bool:
    """Create or upgrade the tables; True if the index tables were replaced on a file
    that holds resources, so that their entries must be rebuilt. The file's version
    is then left as it was until `index_rebuilt`: a rebuild cut short (the process
    killed) starts over, on fresh tables, at the next open."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    connection.executescript(SCHEMA)
    if version == SCHEMA_VERSION:
        connection.executescript(INDEX_SCHEMA)
        return False
    for table in (*_OLD_INDEX_TABLES, *(t for t, _ in INDEX_TABLES.values())):
        connection.execute(f"DROP TABLE IF EXISTS {table}")
    connection.executescript(INDEX_SCHEMA)
    if connection.execute("SELECT 1 FROM resources LIMIT 1").fetchone() is not None:
        return True
    index_rebuilt(connection)  # nothing to rebuild
    return False


def index_rebuilt(connection: sqlite3.Connection) -> None:
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


VERSION_COLUMNS = "v.seq, v.type, v.id, v.version, v.last_updated, v.method, v.body"


def version_of(row: tuple[Any, ...]) -> Version:
    """The Version in a row that starts with VERSION_COLUMNS."""
    seq, resource_type, resource_id, version, last_updated, method, body = row
    return Version(
        resource_type, resource_id, version, from_micros(last_updated), method, body, seq
    )


# Page cache per connection, in KiB. The writer's is large: a bulk load's index inserts
# are scattered over the B-trees. `fhirserver import` of the Synthea data ten times over
# (280,410 resources) ran at 1,908 and 1,957 resources/s with 16 MiB, 2,061 and 1,999
# with 64 MiB, 2,031 with 256 MiB; the data once, 2,368 and 2,353 either way. At 100
# times over (a 15 GB store) no cache helps: the import took about 40 minutes with 16 MiB
# and about 42 with 64. Readers keep SQLite's default 2 MiB: a larger one
# (16 MiB was tried) fills as an export reads the whole store, once per reader thread,
# so the peak RSS of a 10x export was 120 MiB against 83 MiB with 2 MiB, and no search
# was slower (`make bench`: every search p50 under 5 ms either way) because the file's
# pages stay in the operating system's cache.
WRITER_CACHE_KIB = 65536
READER_CACHE_KIB = 2048


def connect(
    path: str, synchronous: str, busy_timeout_ms: int, cache_kib: int = READER_CACHE_KIB
) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and ended explicitly.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    connection.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
    connection.execute("PRAGMA temp_store=MEMORY")
    # Checkpoint the WAL every ~40 MB rather than 4: each checkpoint syncs the file, and
    # with index inserts scattered over the B-trees a bulk load otherwise spends a third
    # of its time in them.
    connection.execute("PRAGMA wal_autocheckpoint=10000")
    connection.execute("PRAGMA foreign_keys=OFF")
    return connection
