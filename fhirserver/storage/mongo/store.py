"""MongoStore: the Store protocol over a MongoDB replica set, with PyMongo's asyncio API.

Every unit of work is one multi-document transaction that first increments the
`counters` document "changes". That write-locks the document until the transaction
ends, so units run one at a time across every server process, as SQLite's
BEGIN IMMEDIATE makes them: a conditional check and the write it guards cannot race,
and change-log numbers become visible in order (a consumer that keeps the last number
it handled never skips one). A unit that finds the counter locked gets a write
conflict, labelled TransientTransactionError, and starts again after a backoff, as the
driver documentation recommends, until `lock_timeout` runs out (then 503).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhirserver.errors import Unavailable
from fhirserver.search.query import IndexEntry, SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import HistoryQuery, Job, SearchResult, Version, VersionConflict
from fhirserver.storage.mongo.documents import (
    INDEX_FIELDS,
    INDEXES,
    LAYOUT_VERSION,
    Document,
    index_fields,
    job_document,
    job_of,
    keys_filter,
    resource_document,
    resource_key,
    version_document,
    version_of,
)
from fhirserver.storage.mongo.includes import find_includes
from fhirserver.storage.mongo.search import Compiler, page_pipeline
from fhirserver.storage.paging import PageRequest

logger = logging.getLogger("fhirserver.storage.mongo")

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_DATABASE = "fhirserver"
# What a read returns of a resource document: the version, not its index.
READ_PROJECTION: Document = {field: 0 for field in INDEX_FIELDS}
STANDALONE = (
    "The MongoDB server is a standalone server: fhirserver writes only to a replica set "
    "(or a sharded cluster), whose transactions make each write atomic. Start mongod "
    "with --replSet (docker compose does) and add replicaSet=... to FHIRSERVER_STORE."
)


def _translated(exc: PyMongoError) -> Exception:
    """What a client gets for a database failure: 503 when trying again can work."""
    if isinstance(exc, ConnectionFailure):
        return Unavailable(
            "The database cannot be reached; try again", headers={"Retry-After": "1"}
        )
    if exc.has_error_label("TransientTransactionError"):
        return Unavailable("The database was busy; try again", headers={"Retry-After": "1"})
    return exc


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A store method whose lost connection or failed election answers 503, not 500."""

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except PyMongoError as exc:
            raise _translated(exc) from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class _Reads:
    """The read side of the protocol, in a session (a unit's transaction, or a snapshot)
    or without one."""

    def __init__(self, database: AsyncDatabase[Document], session: AsyncClientSession | None):
        self._db = database
        self._session = session

    async def _ready(self) -> None:
        """Before every read: a unit of work sends its buffered writes, to read them."""

    async def _find(
        self, collection: str, where: Document, projection: Document | None = None
    ) -> list[Document]:
        await self._ready()
        cursor = self._db[collection].find(where, projection, session=self._session)
        return await cursor.to_list(None)

    async def _find_resources(self, where: Document, projection: Document) -> list[Document]:
        return await self._find("resources", where, projection)

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        await self._ready()
        document = await self._db.resources.find_one(
            {"type": resource_type, "id": resource_id},
            READ_PROJECTION,
            session=self._session,
        )
        return None if document is None else version_of(document)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        await self._ready()
        document = await self._db.versions.find_one(
            {"type": resource_type, "id": resource_id, "version": version},
            session=self._session,
        )
        return None if document is None else version_of(document)

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int]:
        await self._ready()
        where: Document = {}
        if query.resource_type is not None:
            where["type"] = query.resource_type
        if query.id is not None:
            where["id"] = query.id
        lu: Document = {}
        if query.since is not None:
            lu["$gte"] = to_micros(query.since)
        if query.at is not None:
            low, high = (to_micros(moment) for moment in query.at)
            # Current during [low, high): written before `high`, not replaced by `low`.
            lu["$lt"] = high
            where["$or"] = [{"until": {"$exists": False}}, {"until": {"$gt": low}}]
        if lu:
            where["lu"] = lu
        page = dict(where)
        if query.before_seq is not None:
            page["_id"] = {"$lt": query.before_seq}
        cursor = (
            self._db.versions.find(page, session=self._session).sort("_id", -1).limit(query.count)
        )
        documents = await cursor.to_list(None)
        total = await self._db.versions.count_documents(where, session=self._session)
        return [version_of(d) for d in documents], total

    async def search(self, query: SearchQuery) -> SearchResult:
        await self._ready()
        request = PageRequest.of(query)
        where = await Compiler(self._find_resources).filter(query)
        pipeline, names = page_pipeline(
            where, query, request.limit, request.after, request.backwards
        )
        cursor = await self._db.resources.aggregate(pipeline, session=self._session)
        documents = await cursor.to_list(None)
        page = request.page(documents, lambda document: [document[name] for name in names])
        total = None
        if request.counts_total:
            total = await self._db.resources.count_documents(where, session=self._session)
        included = await find_includes(self._find_resources, query.includes, page.rows)
        return page.result(
            [version_of(d) for d in page.rows], [version_of(d) for d in included], total
        )

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        documents = await self._find("resources", keys_filter(keys), READ_PROJECTION)
        versions = [version_of(document) for document in documents]
        return {(v.resource_type, v.id): v for v in versions}

    async def match(self, query: SearchQuery, limit: int) -> list[Version]:
        await self._ready()
        where = await Compiler(self._find_resources).filter(query)
        cursor = self._db.resources.find(where, READ_PROJECTION, session=self._session)
        return [version_of(document) for document in await cursor.limit(limit).to_list(None)]


class MongoStore:
    def __init__(
        self,
        url: str,
        client: AsyncMongoClient[Document] | None = None,
        lock_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.lock_timeout = lock_timeout
        self.index_outdated = False
        # False on a standalone server: every unit of work is refused.
        self.transactions = False
        self._given_client = client
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            await self._open()
        except PyMongoError as exc:
            if self._given_client is None and hasattr(self, "_client"):
                await self._client.close()
            # The driver names hosts, not passwords; the URL's password is scrubbed anyway.
            password = re.match(r"mongodb(?:\+srv)?://[^:@/]*:([^@/]+)@", self.url)
            reason = str(exc) if password is None else str(exc).replace(password[1], "***")
            raise Unavailable(f"MongoDB cannot be used: {reason}") from None

    async def _open(self) -> None:
        self._client: AsyncMongoClient[Document] = self._given_client or AsyncMongoClient(
            self.url, tz_aware=True, connect=False
        )
        # Majority: an acknowledged write survives the loss of the primary.
        self._db = self._client.get_default_database(
            DEFAULT_DATABASE, write_concern=WriteConcern("majority")
        )
        hello = await self._client.admin.command("hello")
        self.transactions = "setName" in hello or hello.get("msg") == "isdbgrid"
        if not self.transactions:
            logger.error("%s Reads work; every write is refused with 503.", STANDALONE)
        for collection, keys, options in INDEXES:
            await self._db[collection].create_index(list(keys), **options)
        await self._db.counters.update_one(
            {"_id": "changes"}, {"$setOnInsert": {"seq": 0, "units": 0}}, upsert=True
        )
        layout = await self._db.counters.find_one_and_update(
            {"_id": "layout"}, {"$set": {"version": LAYOUT_VERSION}}, upsert=True
        )
        stale = layout is not None and layout.get("version") != LAYOUT_VERSION
        self.index_outdated = stale and await self._db.resources.find_one({}) is not None

    async def close(self) -> None:
        if self._given_client is None:
            await self._client.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[_Reads]:
        """Reads that see one snapshot, where the server offers snapshots."""
        if not self.transactions:
            yield _Reads(self._db, None)
            return
        session = self._client.start_session(snapshot=True)
        try:
            yield _Reads(self._db, session)
        finally:
            await session.end_session()

    @_unavailable
    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        return await _Reads(self._db, None).read(resource_type, resource_id)

    @_unavailable
    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        return await _Reads(self._db, None).vread(resource_type, resource_id, version)

    @_unavailable
    async def history(self, query: HistoryQuery) -> tuple[list[Version], int]:
        async with self._reading() as reads:
            return await reads.history(query)

    @_unavailable
    async def search(self, query: SearchQuery) -> SearchResult:
        async with self._reading() as reads:
            return await reads.search(query)

    @_unavailable
    async def scan(self, after: tuple[str, str] | None, limit: int) -> list[Version]:
        where: Document = {"body": {"$ne": None}}
        if after is not None:
            where["$or"] = [
                {"type": {"$gt": after[0]}},
                {"type": after[0], "id": {"$gt": after[1]}},
            ]
        cursor = self._db.resources.find(where, READ_PROJECTION).sort([("type", 1), ("id", 1)])
        return [version_of(document) for document in await cursor.limit(limit).to_list(None)]

    @_unavailable
    async def count(self) -> int:
        return await self._db.resources.count_documents({"body": {"$ne": None}})

    @_unavailable
    async def changes(self, after_seq: int, limit: int) -> list[Version]:
        cursor = self._db.versions.find({"_id": {"$gt": after_seq}}).sort("_id", 1).limit(limit)
        return [version_of(document) for document in await cursor.to_list(None)]

    @_unavailable
    async def claim_job(
        self, kinds: Sequence[str], owner: str, now: datetime, lease: timedelta
    ) -> Job | None:
        moment = to_micros(now)
        document = await self._db.jobs.find_one_and_update(
            {
                "kind": {"$in": list(kinds)},
                "due": {"$lte": moment},
                "$or": [{"owner": None}, {"lease_until": {"$lte": moment}}],
            },
            {"$set": {"owner": owner, "lease_until": to_micros(now + lease)}},
            sort=[("due", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return None if document is None else job_of(document)

    @_unavailable
    async def finish_job(self, job: Job) -> bool:
        result = await self._db.jobs.delete_one(_claimed(job))
        return result.deleted_count == 1

    @_unavailable
    async def retry_job(self, job: Job, due: datetime) -> bool:
        result = await self._db.jobs.update_one(
            _claimed(job),
            {
                "$set": {"due": to_micros(due), "owner": None, "lease_until": None},
                "$inc": {"attempts": 1},
            },
        )
        return result.modified_count == 1

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[_MongoUnitOfWork]:
        if not self.transactions:
            raise Unavailable(STANDALONE)
        async with self._lock:
            unit = await self._begin()
            try:
                yield unit
                await unit.commit()
            except PyMongoError as exc:
                await unit.abort()
                raise _translated(exc) from None
            except BaseException:
                await unit.abort()
                raise
            finally:
                await unit.end()

    @_unavailable
    async def _begin(self) -> _MongoUnitOfWork:
        """Start a transaction holding the counter's write lock, waiting for it with
        backoff while another unit (in any process) holds it."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.002
        while True:
            session = self._client.start_session()
            await session.start_transaction(
                read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            )
            try:
                counter = await self._db.counters.find_one_and_update(
                    {"_id": "changes"},
                    {"$inc": {"units": 1}},
                    session=session,
                    return_document=ReturnDocument.AFTER,
                )
            except PyMongoError as exc:
                await _abort(session)
                await session.end_session()
                transient = exc.has_error_label("TransientTransactionError")
                if not transient or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.1)
                continue
            if counter is None:
                raise RuntimeError("the change counter is missing: open() creates it")
            return _MongoUnitOfWork(self._db, session, counter["seq"], deadline)


def _claimed(job: Job) -> Document:
    """The job as it was claimed: gone or different once another owner or a put_job
    has taken it over."""
    return {
        "_id": f"{job.kind}/{job.key}",
        "owner": job.owner,
        "lease_until": None if job.lease_until is None else to_micros(job.lease_until),
    }


async def _abort(session: AsyncClientSession) -> None:
    if session.in_transaction:
        try:
            await session.abort_transaction()
        except PyMongoError:
            # The server aborts a transaction it cannot finish on its own.
            logger.warning("aborting a MongoDB transaction failed", exc_info=True)


class _MongoUnitOfWork(_Reads):
    """Buffers writes so that a transaction of many writes costs a few round trips."""

    def __init__(
        self,
        database: AsyncDatabase[Document],
        session: AsyncClientSession,
        seq: int,
        deadline: float,
    ) -> None:
        super().__init__(database, session)
        self.session = session
        self._deadline = deadline
        self._first_seq = self._seq = seq
        self._pending: list[tuple[Version, tuple[IndexEntry, ...]]] = []

    async def _flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        keys = {(v.resource_type, v.id) for v, _ in pending}
        found = await self._find("resources", keys_filter(keys), {"version": 1, "seq": 1})
        currents = {d["_id"]: (d["version"], d["seq"]) for d in found}
        versions: list[Document] = []
        replaced: list[UpdateOne] = []
        resources: dict[str, Document] = {}
        for version, index in pending:
            key = resource_key(version.resource_type, version.id)
            now = currents.get(key)
            if version.version != (now[0] + 1 if now else 1):
                raise VersionConflict(f"{key} has moved on")
            self._seq += 1
            versions.append(version_document(version, self._seq))
            if now is not None:
                until = {"$set": {"until": to_micros(version.last_updated)}}
                replaced.append(UpdateOne({"_id": now[1]}, until))
            currents[key] = (version.version, self._seq)
            resources[key] = resource_document(version, self._seq, index)
        await self._db.versions.insert_many(versions, session=self.session)
        if replaced:
            await self._db.versions.bulk_write(replaced, session=self.session)
        await self._db.resources.bulk_write(
            [
                ReplaceOne({"type": doc["type"], "id": doc["id"]}, doc, upsert=True)
                for doc in resources.values()
            ],
            session=self.session,
        )

    async def _ready(self) -> None:
        await self._flush()

    async def write(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        self._pending.append((version, index))

    async def set_index(
        self, resource_type: str, resource_id: str, index: tuple[IndexEntry, ...]
    ) -> None:
        await self._flush()
        fields: Document = {field: [] for field in INDEX_FIELDS if field != "sort"}
        fields.update(index_fields(index))
        await self._db.resources.update_one(
            {"type": resource_type, "id": resource_id},
            {"$set": fields},
            session=self.session,
        )

    async def put_job(self, job: Job) -> None:
        document = job_document(job)
        await self._db.jobs.replace_one(
            {"_id": document["_id"]}, document, upsert=True, session=self.session
        )

    async def drop_job(self, kind: str, key: str) -> None:
        await self._db.jobs.delete_one({"_id": f"{kind}/{key}"}, session=self.session)

    async def commit(self) -> None:
        await self._flush()
        if self._seq != self._first_seq:
            await self._db.counters.update_one(
                {"_id": "changes"}, {"$set": {"seq": self._seq}}, session=self.session
            )
        while True:
            try:
                await self.session.commit_transaction()
                return
            except PyMongoError as exc:
                # Committing again is safe: the driver documentation's advice.
                unknown = exc.has_error_label("UnknownTransactionCommitResult")
                if not unknown or time.monotonic() > self._deadline:
                    raise

    async def abort(self) -> None:
        await _abort(self.session)

    async def end(self) -> None:
        await self.session.end_session()
