"""A thin asyncio face on `mongomock`, shaped like the part of PyMongo's AsyncMongoClient
that `MongoStore` uses, so that the store's real query documents run in CI, where no
MongoDB server exists.

mongomock has no sessions or transactions. This adapter stands in for them the way a
replica set's storage engine (WiredTiger) behaves, per document and with no lock
shared between transactions, so that several store instances on one client race as
several server processes on one replica set do:

- a write inside a transaction to a document that another open transaction has
  written, or that was committed after this transaction started, fails with a
  WriteConflict labelled TransientTransactionError (the first writer wins);
- a write outside any transaction to a document an open transaction has written
  waits until that transaction ends;
- reads (`find`, `find_one`, aggregations, counts) do not see other transactions'
  uncommitted writes: they see the documents as before them;
- every operation first yields to the event loop, so concurrent units interleave at
  each of their operations;
- an abort puts back what the transaction wrote.

Reads inside a transaction see what was committed since it started (read committed,
where a server reads one snapshot); the write-conflict rule still refuses a write based
on a stale read, which is what the store's correctness rests on. Only the real-server
run (FHIRSERVER_TEST_MONGODB_URL) proves MongoDB's own behaviour.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import mongomock
from mongomock.aggregate import process_pipeline
from mongomock.filtering import filter_applies
from mongomock.helpers import patch_datetime_awareness_in_document
from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.errors import ExecutionTimeout, OperationFailure

Document = dict[str, Any]
Key = tuple[str, Any]
# How long a write outside a transaction waits for one holding its document.
WRITE_WAIT_SECONDS = 30.0


class AsyncMockClient:
    def __init__(self) -> None:
        self.sync = mongomock.MongoClient()
        self.admin = _Admin()
        # As a server would: every find / aggregate / count takes `query_ms`, and one
        # with a maxTimeMS below that fails with ExecutionTimeout. Each query's limit is
        # kept in `time_limits` (None: none given).
        self.query_ms = 0
        self.time_limits: list[tuple[str, int | None]] = []
        # Commits so far; when each document was last written by a commit (or by a
        # write outside a transaction); which open transaction holds a document.
        self.clock = 0
        self.committed_at: dict[Key, int] = {}
        self.holders: dict[Key, MockSession] = {}
        # Write conflicts raised, and the options the store asked for (read and write
        # concerns), for tests to check.
        self.conflicts = 0
        # [collection, operation, filter or pipeline, sort] of every query and write,
        # for the index-plan check (tests/storage/test_mongo_index_plans.py).
        self.queries: list[list[Any]] = []
        self.options: list[tuple[str, dict[str, Any]]] = []

    def timed(self, operation: str, limit: int | None) -> None:
        self.time_limits.append((operation, limit))
        if limit is not None and self.query_ms > limit:
            raise ExecutionTimeout("operation exceeded time limit", 50)

    def get_default_database(self, default: str, **options: Any) -> AsyncMockDatabase:
        self.options.append(("database", options))
        return AsyncMockDatabase(self, default)

    def start_session(self, snapshot: bool = False, **_: Any) -> MockSession:
        return MockSession(self)

    async def close(self) -> None:
        self.sync.close()

    def load(self, database: str, collection: str, documents: Iterable[Document]) -> None:
        """Put documents straight into storage, as a restore of a dump would: no copy,
        no unique-index check (mongomock checks each insert against every document:
        quadratic), for tests that need hundreds of thousands of documents."""
        stored = self.sync[database][collection]._store._documents
        for document in documents:
            stored[document["_id"]] = document


class _Admin:
    async def command(self, name: str) -> Document:
        # What a replica-set member of MongoDB 7 answers.
        if name == "buildInfo":
            return {"version": "7.0.0"}
        assert name == "hello"
        return {"isWritablePrimary": True, "setName": "mongomock"}


class MockSession:
    def __init__(self, client: AsyncMockClient) -> None:
        self._client = client
        self.in_transaction = False
        self.snapshot = 0
        # What this transaction holds: each document's collection and its state
        # before the transaction first wrote it (None: it did not exist).
        self.held: dict[Key, tuple[mongomock.Collection, Document | None]] = {}
        self.ended = asyncio.Event()

    async def start_transaction(self, **options: Any) -> None:
        await asyncio.sleep(0)
        self._client.options.append(("transaction", options))
        self.in_transaction = True
        self.snapshot = self._client.clock
        self.held = {}
        self.ended = asyncio.Event()

    async def commit_transaction(self) -> None:
        await asyncio.sleep(0)
        self._client.clock += 1
        for key in self.held:
            self._client.committed_at[key] = self._client.clock
        self._finish()

    async def abort_transaction(self) -> None:
        for (_, identity), (collection, before) in reversed(self.held.items()):
            if before is None:
                collection.delete_one({"_id": identity})
            else:
                collection.replace_one({"_id": identity}, before, upsert=True)
        self._finish()

    async def end_session(self) -> None:
        if self.in_transaction:
            await self.abort_transaction()

    def _finish(self) -> None:
        for key in self.held:
            if self._client.holders.get(key) is self:
                del self._client.holders[key]
        self.held = {}
        self.in_transaction = False
        self.ended.set()


class AsyncMockDatabase:
    def __init__(self, client: AsyncMockClient, name: str) -> None:
        self._client = client
        self.sync = client.sync[name]

    def __getitem__(self, name: str) -> AsyncMockCollection:
        return AsyncMockCollection(self.sync[name], self._client)

    def __getattr__(self, name: str) -> AsyncMockCollection:
        return self[name]

    def get_collection(self, name: str, **options: Any) -> AsyncMockCollection:
        self._client.options.append((f"collection {name}", options))
        return self[name]


class AsyncMockCursor:
    """Documents found lazily, when listed (as a server's cursor runs on its first batch).
    With a limit and no sort, reading stops at the limit, as a server's does: a probe
    for "more than N?" over a large collection reads N + 1 documents, not all."""

    def __init__(
        self, find: Callable[[], Iterable[Document]], query: list[Any] | None = None
    ) -> None:
        self._find = find
        self._sort: list[tuple[str, int]] = []
        self._limit = 0
        self._query = query

    def sort(self, key: Any, direction: int = 1) -> AsyncMockCursor:
        # As PyMongo: a field and a direction, or a list of (field, direction) pairs.
        self._sort = [(key, direction)] if isinstance(key, str) else list(key)
        if self._query is not None:
            self._query[3] = self._sort
        return self

    def limit(self, count: int) -> AsyncMockCursor:
        self._limit = count
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        await asyncio.sleep(0)
        if self._limit and not self._sort:
            return list(itertools.islice(self._find(), self._limit))
        documents: list[Document] = list(self._find())
        for field, direction in reversed(self._sort):
            documents.sort(key=lambda d, f=field: _sort_key(_get(d, f)), reverse=direction < 0)
        return documents[: self._limit] if self._limit else documents


class AsyncMockCollection:
    """Writes take their documents as a transaction would (`_take`); reads hide other
    transactions' uncommitted writes (`_visible`)."""

    def __init__(self, collection: mongomock.Collection, client: AsyncMockClient) -> None:
        self.sync = collection
        self._client = client

    # -- isolation --------------------------------------------------------------

    def _key(self, identity: Any) -> Key:
        return (self.sync.full_name, identity)

    async def _take(self, session: MockSession | None, identities: Iterable[Any]) -> None:
        """Before writing these documents: as a transaction, hold them or conflict;
        outside one, wait for the transactions that hold them."""
        client = self._client
        for identity in identities:
            key = self._key(identity)
            if session is None or not session.in_transaction:
                while (holder := client.holders.get(key)) is not None:
                    await asyncio.wait_for(holder.ended.wait(), WRITE_WAIT_SECONDS)
                client.clock += 1
                client.committed_at[key] = client.clock
                continue
            holder = client.holders.get(key)
            if holder is session:
                continue
            if holder is not None or client.committed_at.get(key, 0) > session.snapshot:
                client.conflicts += 1
                raise OperationFailure(
                    "WriteConflict error: this operation conflicted with another operation",
                    112,
                    {"errorLabels": ["TransientTransactionError"], "code": 112},
                )
            client.holders[key] = session
            before = self.sync.find_one({"_id": identity})
            session.held[key] = (self.sync, copy.deepcopy(before))

    def _visible(self, where: Document, session: MockSession | None) -> Iterator[Document]:
        """The documents matching `where` (copies, read lazily), with other
        transactions' writes not yet committed taken out: each such document as it was
        before them."""
        foreign = {
            key[1]: holder.held[key][1]
            for key, holder in self._client.holders.items()
            if key[0] == self.sync.full_name and holder is not session
        }
        # mongomock's own find() copies and lists every match before a limit applies;
        # its treatment of datetimes in the filter (naive UTC, milliseconds) is kept.
        where = patch_datetime_awareness_in_document(where)
        documents = (copy.deepcopy(d) for d in self.sync._iter_documents(where))
        if not foreign:
            yield from documents
            return
        yield from (d for d in documents if d["_id"] not in foreign)
        visible: list[Document] = []
        for before in foreign.values():
            if before is not None and filter_applies(where, before):
                visible.append(copy.deepcopy(before))
        yield from visible

    def _targets(self, where: Document, many: bool = False) -> list[Any]:
        """The documents a write changes, uncommitted ones of other transactions
        included (writing one of those is a conflict)."""
        self._client.queries.append([self.sync.name, "write", where, None])
        found = [d["_id"] for d in self.sync.find(where, {"_id": 1})]
        return found if many else found[:1]

    # -- reads ------------------------------------------------------------------

    def find(
        self,
        where: Document | None = None,
        projection: Document | None = None,
        session: Any = None,
        max_time_ms: int | None = None,
    ) -> AsyncMockCursor:
        self._client.timed("find", max_time_ms)
        return self._cursor(where or {}, projection, session)

    def _cursor(
        self, where: Document, projection: Document | None, session: MockSession | None
    ) -> AsyncMockCursor:
        query: list[Any] = [self.sync.name, "find", where, None]
        self._client.queries.append(query)
        return AsyncMockCursor(
            lambda: (_project(d, projection) for d in self._visible(where, session)), query
        )

    async def find_one(
        self,
        where: Document,
        projection: Document | None = None,
        session: Any = None,
        sort: Any = None,
        max_time_ms: int | None = None,
    ) -> Document | None:
        await asyncio.sleep(0)
        self._client.timed("find_one", max_time_ms)
        cursor = self._cursor(where, projection, session)
        if sort is not None:
            cursor.sort(sort)
        found = await cursor.limit(1).to_list(None)
        return found[0] if found else None

    async def aggregate(
        self, pipeline: list[Document], session: Any = None, maxTimeMS: int | None = None
    ) -> AsyncMockCursor:
        await asyncio.sleep(0)
        self._client.timed("aggregate", maxTimeMS)
        self._client.queries.append([self.sync.name, "aggregate", pipeline, None])
        # mongomock copies the whole collection before the first stage; a leading
        # $match is applied first instead, as a server does (from an index).
        match = pipeline[0].get("$match") if pipeline else None
        stages = pipeline[1:] if match is not None else pipeline
        source = list(self._visible(match or {}, session))
        documents = list(process_pipeline(source, self.sync.database, stages, None))
        return AsyncMockCursor(lambda: documents)

    async def count_documents(
        self, where: Document, session: Any = None, maxTimeMS: int | None = None
    ) -> int:
        await asyncio.sleep(0)
        self._client.timed("count_documents", maxTimeMS)
        self._client.queries.append([self.sync.name, "count", where, None])
        return sum(1 for _ in self._visible(where, session))

    async def index_information(self) -> dict[str, Any]:
        information: dict[str, Any] = self.sync.index_information()
        return information

    async def estimated_document_count(self) -> int:
        count: int = self.sync.estimated_document_count()
        return count

    async def create_index(self, keys: Any, **options: Any) -> str:
        name: str = self.sync.create_index(keys, **options)
        return name

    # -- writes -----------------------------------------------------------------

    async def insert_many(self, documents: list[Document], session: Any = None) -> Any:
        await asyncio.sleep(0)
        await self._take(session, [document["_id"] for document in documents])
        return self.sync.insert_many(documents)

    async def replace_one(
        self, where: Document, document: Document, upsert: bool = False, session: Any = None
    ) -> Any:
        await asyncio.sleep(0)
        await self._take(session, self._targets(where) or _upserted(where, document, upsert))
        return self.sync.replace_one(where, document, upsert=upsert)

    async def update_one(
        self, where: Document, update: Document, upsert: bool = False, session: Any = None
    ) -> Any:
        await asyncio.sleep(0)
        await self._take(session, self._targets(where) or _upserted(where, None, upsert))
        return self.sync.update_one(where, update, upsert=upsert)

    async def update_many(self, where: Document, update: Document, session: Any = None) -> Any:
        await asyncio.sleep(0)
        await self._take(session, self._targets(where, many=True))
        return self.sync.update_many(where, update)

    async def delete_one(self, where: Document, session: Any = None) -> Any:
        await asyncio.sleep(0)
        await self._take(session, self._targets(where))
        return self.sync.delete_one(where)

    async def find_one_and_delete(self, where: Document, session: Any = None) -> Document | None:
        await asyncio.sleep(0)
        await self._take(session, self._targets(where))
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
        projection: Document | None = None,
    ) -> Document | None:
        await asyncio.sleep(0)
        self._client.queries.append([self.sync.name, "write", where, None])
        self._client.queries[-1][3] = sort
        targets = [d["_id"] for d in self.sync.find(where, {"_id": 1}, sort=sort, limit=1)]
        await self._take(session, targets or _upserted(where, None, upsert))
        found: Document | None = self.sync.find_one_and_update(
            where, update, sort=sort, upsert=upsert, return_document=return_document
        )
        return None if found is None else _project(found, projection)

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


def _upserted(where: Document, document: Document | None, upsert: bool) -> list[Any]:
    """The _id an upsert that matched nothing inserts, when it is known beforehand."""
    if not upsert:
        return []
    if document is not None and "_id" in document:
        return [document["_id"]]
    identity = where.get("_id")
    return [] if identity is None or isinstance(identity, dict) else [identity]


def _project(document: Document, projection: Document | None) -> Document:
    """A top-level projection: fields named with 1 (and _id), or all but those with 0."""
    if not projection:
        return document
    if any(value for value in projection.values()):
        return {k: v for k, v in document.items() if k == "_id" or projection.get(k)}
    return {k: v for k, v in document.items() if k not in projection}


def _get(document: Document, path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)
