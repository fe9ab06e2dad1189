"""A unit of work on MongoDB (DESIGN.md "The storage contract"): one multi-document
transaction that first increments the `counters` document "changes".

That write-locks the document until the transaction ends, so units run one at a time
across every server process, as SQLite's BEGIN IMMEDIATE makes them: a conditional
check and the write it guards cannot race, and change-log numbers become visible in
order (a consumer that keeps the last number it handled never skips one). A unit that
finds the counter locked gets a write conflict, labelled TransientTransactionError, and
starts again after a backoff, as the driver documentation recommends, until the lock
timeout runs out (the store then answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from pymongo import ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhirserver.search.query import IndexEntry
from fhirserver.search.time import to_micros
from fhirserver.storage.base import Job, Version, VersionConflict
from fhirserver.storage.mongo.documents import (
    INDEX_FIELDS,
    Document,
    index_fields,
    job_document,
    keys_filter,
    resource_document,
    resource_key,
    version_document,
)
from fhirserver.storage.mongo.reads import Reads

logger = logging.getLogger("fhirserver.storage.mongo")


async def begin(
    client: AsyncMongoClient[Document],
    database: AsyncDatabase[Document],
    lock_timeout: float,
    max_time_ms: int | None = None,
) -> MongoUnitOfWork:
    """Start a transaction holding the counter's write lock, waiting for it with
    backoff while another unit (in any process) holds it. `max_time_ms`: the time
    limit of each query the unit makes (a conditional write's match is a search)."""
    deadline = time.monotonic() + lock_timeout
    delay = 0.002
    while True:
        session = client.start_session()
        await session.start_transaction(
            read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
        )
        try:
            counter = await database.counters.find_one_and_update(
                {"_id": "changes"},
                {"$inc": {"units": 1}},
                session=session,
                return_document=ReturnDocument.AFTER,
            )
        except PyMongoError as exc:
            await abort_transaction(session)
            await session.end_session()
            transient = exc.has_error_label("TransientTransactionError")
            if not transient or time.monotonic() > deadline:
                raise
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.1)
            continue
        if counter is None:
            raise RuntimeError("the change counter is missing: open() creates it")
        return MongoUnitOfWork(database, session, counter["seq"], deadline, max_time_ms)


async def abort_transaction(session: AsyncClientSession) -> None:
    if session.in_transaction:
        try:
            await session.abort_transaction()
        except PyMongoError:
            # The server aborts a transaction it cannot finish on its own.
            logger.warning("aborting a MongoDB transaction failed", exc_info=True)


class MongoUnitOfWork(Reads):
    """Buffers writes so that a transaction of many writes costs a few round trips."""

    def __init__(
        self,
        database: AsyncDatabase[Document],
        session: AsyncClientSession,
        seq: int,
        deadline: float,
        max_time_ms: int | None = None,
    ) -> None:
        super().__init__(database, session, max_time_ms)
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
        await abort_transaction(self.session)

    async def end(self) -> None:
        await self.session.end_session()
