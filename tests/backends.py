"""The stores the contract suites run on, and what mongomock cannot run.

- `sqlite`: always; a real SQLite file in the test's temporary folder.
- `mongomock`: always; the MongoDB store's real query documents and pipelines,
  executed by the `mongomock` library through `tests/mongomock_async.py`.
- `mongodb`: a real MongoDB server (a replica set), only when FHIRSERVER_TEST_MONGODB_URL
  is set, e.g. `mongodb://localhost:27017/?replicaSet=rs0&directConnection=true`; each
  test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fhirserver.storage.base import Store
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.sqlite import SqliteStore
from tests.mongomock_async import AsyncMockClient

MONGODB_URL = os.environ.get("FHIRSERVER_TEST_MONGODB_URL", "")
BACKENDS = ["sqlite", "mongomock", *(["mongodb"] if MONGODB_URL else [])]

Rows = list[tuple[Any, ...]]


@dataclass
class Backend:
    name: str
    # Unopened: the app, or the test, opens and closes it.
    store: Store
    # Every stored document or row, for before/after comparisons.
    dump: Callable[[], Rows]
    cleanup: Callable[[], None]


def make_backend(name: str, sqlite_path: Path) -> Backend:
    if name == "sqlite":
        return Backend(
            name, SqliteStore(str(sqlite_path)), lambda: sqlite_dump(str(sqlite_path)), _nothing
        )
    if name == "mongomock":
        client = AsyncMockClient()
        store = MongoStore("mongodb://mongomock/fhirserver", client=client)  # type: ignore[arg-type]
        database = client.sync["fhirserver"]
        return Backend(name, store, lambda: _mongo_dump(database), _nothing)
    if name == "mongodb":
        import pymongo

        database_name = f"fhirtest_{uuid.uuid4().hex[:12]}"
        url = _with_database(MONGODB_URL, database_name)
        sync: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)

        def cleanup() -> None:
            sync.drop_database(database_name)
            sync.close()

        return Backend(name, MongoStore(url), lambda: _mongo_dump(sync[database_name]), cleanup)
    raise ValueError(name)


def sqlite_dump(path: str) -> list[tuple[Any, ...]]:
    """Every row of every table, for byte-for-byte before/after comparisons."""
    with sqlite3.connect(path) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return [
            (table, *row)
            for table in tables
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
        ]


def _nothing() -> None:
    return None


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _mongo_dump(database: Any) -> Rows:
    rows: Rows = []
    for name in sorted(database.list_collection_names()):
        for document in database[name].find():
            rows.append((name, str(document["_id"]), *sorted(document.items(), key=_first)))
    return sorted(rows, key=lambda row: row[:2])


def _first(item: tuple[str, Any]) -> str:
    return item[0]
