"""A thin asyncio face on `mongomock`, shaped like the part of PyMongo's AsyncMongoClient
that `MongoStore` uses, so that the store's real query documents run in CI, where no
MongoDB server exists.

mongomock has no sessions or transactions. This adapter stands in for them: a
transaction holds one lock for the whole mock server (units of work run one at a time,
as the counter document makes them on a real server) and keeps an undo log of every
write, replayed backwards on abort. That proves the store aborts when it must, and what
a rollback leaves; it does not prove MongoDB's own isolation or write-conflict retries,
which only the real-server run (FHIRSERVER_TEST_MONGODB_URL) covers.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import mongomock
from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import ExecutionTimeout

Document = dict[str, Any]


class AsyncMockClient:
    def __init__(self) -> None:
        self.sync = mongomock.MongoClient()
        self.admin = _Admin()
        self.lock = asyncio.Lock()
        # As a server would: every find / aggregate / count takes `query_ms`, and one
        # with a maxTimeMS below that fails with ExecutionTimeout. Each query's limit is
        # kept in `time_limits` (None: none given).
        self.query_ms = 0
        self.time_limits: list[tuple[str, int | None]] = []

    def timed(self, operation: str, limit: int | None) -> None:
        self.time_limits.append((operation, limit))
        if limit is not None and self.query_ms > limit:
            raise ExecutionTimeout("operation exceeded time limit", 50)

    def get_default_database(self, default: str, **_: Any) -> AsyncMockDatabase:
        return AsyncMockDatabase(self, default)

    def start_session(self, snapshot: bool = False, **_: Any) -> MockSession:
        return MockSession(self)

    async def close(self) -> None:
        self.sync.close()


class _Admin:
    async def command(self, name: str) -> Document:
        # What a replica-set member answers to "hello".
        assert name == "hello"
        return {"isWritablePrimary": True, "setName": "mongomock"}


class MockSession:
    def __init__(self, client: AsyncMockClient) -> None:
        self._client = client
        # (collection, _id, the document before the write or None if it was absent)
        self.undo: list[tuple[Any, Any, Document | None]] | None = None

    @property
    def in_transaction(self) -> bool:
        return self.undo is not None

    async def start_transaction(self, **_: Any) -> None:
        await self._client.lock.acquire()
        self.undo = []

    async def commit_transaction(self) -> None:
        self._finish()

    async def abort_transaction(self) -> None:
        assert self.undo is not None
        for collection, key, before in reversed(self.undo):
            if before is None:
                collection.delete_one({"_id": key})
            else:
                collection.replace_one({"_id": key}, before, upsert=True)
        self._finish()

    async def end_session(self) -> None:
        if self.in_transaction:
            await self.abort_transaction()

    def _finish(self) -> None:
        self.undo = None
        self._client.lock.release()


class AsyncMockDatabase:
    def __init__(self, client: AsyncMockClient, name: str) -> None:
        self._client = client
        self.sync = client.sync[name]

    def __getitem__(self, name: str) -> AsyncMockCollection:
        return AsyncMockCollection(self.sync[name], self._client)

    def __getattr__(self, name: str) -> AsyncMockCollection:
        return self[name]


class AsyncMockCursor:
    def __init__(self, documents: Any) -> None:
        self._documents = documents

    def sort(self, key: Any, direction: int = 1) -> AsyncMockCursor:
        # As PyMongo: a field and a direction, or a list of (field, direction) pairs.
        self._documents = self._documents.sort(key, direction if isinstance(key, str) else None)
        return self

    def limit(self, count: int) -> AsyncMockCursor:
        self._documents = self._documents.limit(count)
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        return list(self._documents)


class AsyncMockCollection:
    """Each write inside a transaction first records what it will change."""

    def __init__(self, collection: mongomock.Collection, client: AsyncMockClient) -> None:
        self.sync = collection
        self._client = client

    def _record(self, session: MockSession | None, where: Document) -> None:
        if session is None or session.undo is None:
            return
        for before in self.sync.find(where):
            session.undo.append((self.sync, before["_id"], copy.deepcopy(before)))

    def _created(self, session: MockSession | None, key: Any) -> None:
        if key is not None and session is not None and session.undo is not None:
            session.undo.append((self.sync, key, None))

    def find(
        self,
        where: Document | None = None,
        projection: Document | None = None,
        session: Any = None,
        max_time_ms: int | None = None,
    ) -> AsyncMockCursor:
        self._client.timed("find", max_time_ms)
        # Copies: mongomock adds to a projection it is given, PyMongo does not.
        return AsyncMockCursor(self.sync.find(where or {}, _copy(projection)))

    async def find_one(
        self, where: Document, projection: Document | None = None, session: Any = None
    ) -> Document | None:
        self._client.timed("find_one", None)
        found: Document | None = self.sync.find_one(where, _copy(projection))
        return found

    async def aggregate(
        self, pipeline: list[Document], session: Any = None, maxTimeMS: int | None = None
    ) -> AsyncMockCursor:
        self._client.timed("aggregate", maxTimeMS)
        return AsyncMockCursor(_Listed(self.sync.aggregate(pipeline)))

    async def count_documents(
        self, where: Document, session: Any = None, maxTimeMS: int | None = None
    ) -> int:
        self._client.timed("count_documents", maxTimeMS)
        count: int = self.sync.count_documents(where)
        return count

    async def create_index(self, keys: Any, **options: Any) -> str:
        name: str = self.sync.create_index(keys, **options)
        return name

    async def insert_many(self, documents: list[Document], session: Any = None) -> Any:
        for document in documents:
            self._created(session, document["_id"])
        return self.sync.insert_many(documents)

    async def replace_one(
        self, where: Document, document: Document, upsert: bool = False, session: Any = None
    ) -> Any:
        self._record(session, where)
        result = self.sync.replace_one(where, document, upsert=upsert)
        self._created(session, result.upserted_id)
        return result

    async def update_one(
        self, where: Document, update: Document, upsert: bool = False, session: Any = None
    ) -> Any:
        self._record(session, where)
        result = self.sync.update_one(where, update, upsert=upsert)
        self._created(session, result.upserted_id)
        return result

    async def delete_one(self, where: Document, session: Any = None) -> Any:
        self._record(session, where)
        return self.sync.delete_one(where)

    async def find_one_and_delete(self, where: Document, session: Any = None) -> Document | None:
        self._record(session, where)
        found: Document | None = self.sync.find_one_and_delete(where)
        return found

    async def find_one_and_update(
        self,
        where: Document,
        update: Document,
        session: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Document | None:
        self._record(session, where)
        found: Document | None = self.sync.find_one_and_update(
            where, update, sort=sort, upsert=upsert, return_document=return_document
        )
        return found

    async def bulk_write(self, operations: list[Any], session: Any = None) -> None:
        # pymongo's operation objects, replayed one by one (mongomock's own bulk_write
        # does not follow newer pymongo releases).
        for operation in operations:
            if isinstance(operation, ReplaceOne):
                await self.replace_one(
                    operation._filter, operation._doc, operation._upsert, session=session
                )
            elif isinstance(operation, UpdateOne):
                await self.update_one(
                    operation._filter, operation._doc, bool(operation._upsert), session=session
                )
            else:
                raise NotImplementedError(type(operation).__name__)


class _Listed:
    """An aggregation's result, as a list a cursor can hold."""

    def __init__(self, documents: Iterator[Document]) -> None:
        self._documents = list(documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self._documents)


def _copy(projection: Document | None) -> Document | None:
    return None if projection is None else dict(projection)
