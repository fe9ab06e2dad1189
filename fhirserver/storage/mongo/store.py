"""MongoStore: the Store protocol over a MongoDB replica set, with PyMongo's asyncio API.

Reads are in `reads.py`, units of work (concurrent snapshot transactions, see there
for why they stay correct) in `unit.py`; here the store opens the database, hands
units out, reads the change feed up to its watermark, and answers a lost connection
with 503, a lost race with `Contention` (run again by storage/retry.py), and a
document MongoDB cannot hold with 413.
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

from bson.errors import BSONError
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    ExecutionTimeout,
    PyMongoError,
)
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhirserver.errors import (
    Contention,
    FHIRError,
    PayloadTooLarge,
    TooCostly,
    Unavailable,
    Unprocessable,
)
from fhirserver.search.query import SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import HistoryQuery, Job, Record, SearchResult, Version
from fhirserver.storage.mongo.documents import (
    INDEXES,
    LAYOUT_VERSION,
    Document,
    job_of,
    live_record,
    record_body,
    record_document,
    record_id,
    record_is,
    record_of,
)
from fhirserver.storage.mongo.reads import READ_PROJECTION, Reads, versions_of
from fhirserver.storage.mongo.search import JOIN_KEYS
from fhirserver.storage.mongo.unit import (
    STRIPES,
    MongoUnitOfWork,
    begin,
    next_number,
    seq_of,
    stripe_id,
)

logger = logging.getLogger("fhirserver.storage.mongo")

P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_DATABASE = "fhirserver"
SEARCHES_AT_ONCE = 50
# MongoDB's error code for a unique index refusing a key.
DUPLICATE_KEY = 11000
STANDALONE = (
    "The MongoDB server is a standalone server: fhirserver writes only to a replica set "
    "(or a sharded cluster), whose transactions make each write atomic. Start mongod "
    "with --replSet (docker compose does) and add replicaSet=... to FHIRSERVER_STORE."
)


def _translated(exc: PyMongoError | BSONError) -> FHIRError:
    """What a client gets for a database failure: 503 when trying again can work."""
    if isinstance(exc, DocumentTooLarge):
        return PayloadTooLarge(
            "The resource with its search index is larger than a MongoDB document may be (16 MiB)"
        )
    if isinstance(exc, BSONError):
        return Unprocessable(f"The resource cannot be stored in MongoDB: {exc}")
    if isinstance(exc, ExecutionTimeout):
        return TooCostly(
            "The search took longer than the server's time limit;"
            " narrow its criteria or page with a smaller _count"
        )
    if isinstance(exc, ConnectionFailure):
        return Unavailable(
            "The database cannot be reached; try again", headers={"Retry-After": "1"}
        )
    if exc.has_error_label("TransientTransactionError") or _duplicate(exc):
        # A write conflict, or a concurrent unit's insert of the same key (a version
        # number, a client-chosen id): the unit lost a race.
        return Contention()
    # Anything else is not the client's doing, and trying again will not help: 503
    # without Retry-After, naming the server's reason (never a password: the server
    # does not echo credentials).
    return Unavailable(f"The database refused the operation: {exc}")


def _duplicate(exc: PyMongoError) -> bool:
    if isinstance(exc, DuplicateKeyError):
        return True
    errors = exc.details.get("writeErrors", []) if isinstance(exc, BulkWriteError) else []
    return any(error.get("code") == DUPLICATE_KEY for error in errors)


def _unavailable(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """A store method whose lost connection or failed election answers 503, not 500."""

    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (PyMongoError, BSONError) as exc:
            raise _translated(exc) from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class MongoStore:
    # Units run concurrently in snapshot transactions; a lost race is Contention.
    concurrent_units = True

    def __init__(
        self,
        url: str,
        client: AsyncMongoClient[Document] | None = None,
        commit_timeout: float = 10.0,
        search_timeout: float = 30.0,
        join_keys: int = JOIN_KEYS,
    ) -> None:
        """`commit_timeout`: seconds a commit whose result is unknown is sent again;
        `search_timeout`: seconds a search or history page may take (maxTimeMS on
        each of its queries; TooCostly past it); `join_keys`: the most keys a chain or
        `_has` lists in one filter, past which it runs as a semi-join (search.py)."""
        self.join_keys = join_keys
        self.url = url
        self.commit_timeout = commit_timeout
        self.search_timeout = search_timeout
        # Searches in flight at once: fewer than the driver's pool (100 connections),
        # so reads by id always find a free connection however many searches run.
        self._searches = asyncio.Semaphore(SEARCHES_AT_ONCE)
        self.index_outdated = False
        # False on a standalone server: every unit of work is refused.
        self.transactions = False
        self._given_client = client
        # Stripes this process's open units hold: a new unit takes another (unit.py).
        self._stripes_held: set[int] = set()

    async def open(self) -> None:
        try:
            await self._open()
        except PyMongoError as exc:
            if self._given_client is None and hasattr(self, "_client"):
                await self._client.close()
            raise Unavailable(f"MongoDB cannot be used: {self.scrubbed(exc)}") from None

    def scrubbed(self, exc: BaseException) -> str:
        """The error's text; the driver names hosts, not passwords, but the URL's
        password is taken out anyway."""
        password = re.match(r"mongodb(?:\+srv)?://[^:@/]*:([^@/]+)@", self.url)
        return str(exc) if password is None else str(exc).replace(password[1], "***")

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
        newest = await self._db.versions.find_one({}, {"_id": 1}, sort=[("_id", -1)])
        first = next_number(0, 0 if newest is None else int(newest["_id"]))
        for stripe in range(STRIPES):
            await self._db.counters.update_one(
                {"_id": stripe_id(stripe)}, {"$setOnInsert": {"n": first, "units": 0}}, upsert=True
            )
        # The layout's version is written once the index is rebuilt (index_rebuilt), so
        # a rebuild cut short is done again at the next open.
        layout = await self._db.counters.find_one({"_id": "layout"})
        if layout is None or layout.get("version") != LAYOUT_VERSION:
            self.index_outdated = await self._db.resources.find_one({}) is not None
            if not self.index_outdated:
                await self.index_rebuilt()

    @property
    def client(self) -> AsyncMongoClient[Document]:
        return self._client

    @property
    def database(self) -> AsyncDatabase[Document]:
        return self._db

    async def index_rebuilt(self) -> None:
        await self._db.counters.update_one(
            {"_id": "layout"}, {"$set": {"version": LAYOUT_VERSION}}, upsert=True
        )

    @property
    def _max_time_ms(self) -> int:
        return max(1, int(self.search_timeout * 1000))

    async def close(self) -> None:
        if self._given_client is None:
            await self._client.close()

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[Reads]:
        """Reads that see one snapshot, where the server offers snapshots."""
        async with self._searches:
            if not self.transactions:
                yield Reads(self._db, None, self._max_time_ms, self.join_keys)
                return
            session = self._client.start_session(snapshot=True)
            try:
                yield Reads(self._db, session, self._max_time_ms, self.join_keys)
            finally:
                await session.end_session()

    @_unavailable
    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        return await Reads(self._db, None, self._max_time_ms).read(resource_type, resource_id)

    @_unavailable
    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        return await Reads(self._db, None, self._max_time_ms).vread(
            resource_type, resource_id, version
        )

    @_unavailable
    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        return await Reads(self._db, None, self._max_time_ms).read_many(keys)

    @_unavailable
    async def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
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
        cursor = self._db.resources.find(
            where, READ_PROJECTION, max_time_ms=self._max_time_ms
        ).sort([("type", 1), ("id", 1)])
        return await versions_of(self._db, None, await cursor.limit(limit).to_list(None))

    @_unavailable
    async def count(self) -> int:
        return await self._db.resources.count_documents({"body": {"$ne": None}})

    @_unavailable
    async def changes(self, after_seq: int, limit: int) -> list[Version]:
        """Up to the watermark (unit.py): every version numbered at or below it is
        committed. Read with majority read concern, as the writes are made: a number
        read here cannot be rolled back by a failover and then given to another write."""
        numbers = await self._stripe_numbers()
        found = await self._up_to(after_seq, _watermark(numbers), limit)
        if len(found) < limit:
            raised = await self._raised(numbers, max(_watermark(numbers), after_seq))
            if raised is not None:
                found = await self._up_to(after_seq, raised, limit)
        return found

    @_unavailable
    async def settled_seq(self) -> int:
        numbers = await self._stripe_numbers()
        raised = await self._raised(numbers, _watermark(numbers))
        return _watermark(numbers) if raised is None else raised

    async def _up_to(self, after_seq: int, watermark: int, limit: int) -> list[Version]:
        if watermark <= after_seq:
            return []
        where = {"_id": {"$gt": after_seq, "$lte": watermark}}
        versions = self._majority("versions")
        cursor = versions.find(where, max_time_ms=self._max_time_ms).sort("_id", 1).limit(limit)
        return await versions_of(self._db, None, await cursor.to_list(None))

    async def _raised(self, numbers: list[int], above: int) -> int | None:
        """When versions numbered above `above` are committed, the watermark raised past
        them; None when there are none. Stripes that nobody wrote lately lag behind the
        one written: they are raised past the highest n (each waits for a unit in
        flight on it, whose versions then count)."""
        newer = {"_id": {"$gt": above}}
        versions = self._majority("versions")
        if await versions.find_one(newer, {"_id": 1}, max_time_ms=self._max_time_ms) is None:
            return None
        top = max(numbers) + 1
        await self._db.counters.update_many(
            {"_id": {"$in": [stripe_id(s) for s in range(STRIPES)]}, "n": {"$lt": top}},
            {"$max": {"n": top}},
        )
        return _watermark(await self._stripe_numbers())

    def _majority(self, collection: str) -> Any:
        return self._db.get_collection(collection, read_concern=ReadConcern("majority"))

    async def watermark(self) -> int:
        """The change feed's watermark as it stands, without raising idle stripes."""
        return _watermark(await self._stripe_numbers())

    async def _stripe_numbers(self) -> list[int]:
        ids = [stripe_id(stripe) for stripe in range(STRIPES)]
        counters = self._majority("counters")
        cursor = counters.find({"_id": {"$in": ids}}, {"n": 1}, max_time_ms=self._max_time_ms)
        by_id = {document["_id"]: int(document["n"]) for document in await cursor.to_list(None)}
        numbers = [by_id[stripe_id(stripe)] for stripe in range(STRIPES)]
        return numbers

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

    # Keyed records: each one document operation, atomic on its own.

    @_unavailable
    async def put_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None
    ) -> None:
        document = record_document(kind, key, body, expires)
        await self._db.records.replace_one({"_id": document["_id"]}, document, upsert=True)

    @_unavailable
    async def get_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        document = await self._db.records.find_one(
            {"_id": record_id(kind, key), **live_record(now)}
        )
        return None if document is None else record_body(document)

    @_unavailable
    async def list_records(self, kind: str, now: datetime) -> list[Record]:
        cursor = self._db.records.find({"kind": kind, **live_record(now)}).sort("key", 1)
        return [record_of(document) for document in await cursor.to_list(None)]

    @_unavailable
    async def delete_record(
        self, kind: str, key: str, only_if: dict[str, Any] | None = None
    ) -> bool:
        found = {"_id": record_id(kind, key)} if only_if is None else record_is(kind, key, only_if)
        result = await self._db.records.delete_one(found)
        return result.deleted_count == 1

    @_unavailable
    async def replace_record(
        self,
        kind: str,
        key: str,
        expected: dict[str, Any],
        body: dict[str, Any],
        expires: datetime | None,
        now: datetime,
    ) -> bool:
        document = record_document(kind, key, body, expires)
        del document["_id"]
        # One update with the expected body in its filter: atomic on the document.
        result = await self._db.records.update_one(
            {**record_is(kind, key, expected), **live_record(now)}, {"$set": document}
        )
        return result.matched_count == 1

    @_unavailable
    async def add_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None, now: datetime
    ) -> bool:
        document = record_document(kind, key, body, expires)
        identity = document.pop("_id")
        # One upsert: an expired record matches and is overwritten; an unexpired one does
        # not match, so the upsert inserts its _id again and the unique _id refuses it.
        try:
            await self._db.records.update_one(
                {"_id": identity, "exp": {"$lte": to_micros(now)}},
                {"$set": document},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    @_unavailable
    async def take_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        document = await self._db.records.find_one_and_delete(
            {"_id": record_id(kind, key), **live_record(now)}
        )
        return None if document is None else record_body(document)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[MongoUnitOfWork]:
        if not self.transactions:
            raise Unavailable(STANDALONE)
        free = [s for s in range(STRIPES) if s not in self._stripes_held]
        stripe = random.choice(free or range(STRIPES))
        self._stripes_held.add(stripe)
        try:
            unit = await self._begin(stripe)
            try:
                yield unit
                await unit.commit(time.monotonic() + self.commit_timeout)
            except (PyMongoError, BSONError) as exc:
                await unit.abort()
                raise _translated(exc) from None
            except BaseException:
                await unit.abort()
                raise
            finally:
                await unit.end()
        finally:
            self._stripes_held.discard(stripe)

    @_unavailable
    async def _begin(self, stripe: int) -> MongoUnitOfWork:
        return await begin(self._client, self._db, stripe, self._max_time_ms, self.join_keys)


def _watermark(numbers: Sequence[int]) -> int:
    """Every version numbered at or below it is committed (unit.py)."""
    return min(seq_of(number, stripe) for stripe, number in enumerate(numbers))


def _claimed(job: Job) -> Document:
    """The job as it was claimed: gone or different once another owner or a put_job
    has taken it over."""
    return {
        "_id": f"{job.kind}/{job.key}",
        "owner": job.owner,
        "lease_until": None if job.lease_until is None else to_micros(job.lease_until),
    }
