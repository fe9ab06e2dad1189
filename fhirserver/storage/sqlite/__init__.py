"""The embedded SQLite backend: one file, WAL mode, one writer, many readers."""

from fhirserver.storage.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
