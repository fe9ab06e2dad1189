"""A unit of work on MongoDB (DESIGN.md "The storage contract"): one multi-document
snapshot transaction, run concurrently with the units of every other server process.

What keeps concurrent units correct is MongoDB's own write-conflict rule: a
transaction that writes a document another transaction has written since its
snapshot (or is writing) is refused with a WriteConflict, labelled
TransientTransactionError, and the whole unit is then run again (storage/retry.py).
So:

- two updates of one resource both write its `resources` document: one wins, the
  other runs again on the new current version (per-resource optimistic concurrency;
  the unique index on versions (type, id, version) is the second line);
- a conditional write's match, and any search inside a unit (a job checking that
  its AuditEvent is not recorded yet), writes a `guards` document named by a hash of
  the criteria: two units that decided on the same criteria conflict, and the loser
  sees the winner's resource when it runs again, as HAPI's unique search-URL table
  makes conditional creates race-free (a conditional reference, a lookup that writes
  nothing on its own, takes no guard);
- change-log numbers come from one of STRIPES counter documents, not one: a unit
  takes a stripe (the first write of its transaction, so that a collision costs
  nothing to retry), numbers its versions n * STRIPES + stripe with n above every
  stripe's n in its snapshot (so a unit that begins after another commits, in any
  process, is numbered after it), and writes the stripe's last n at commit. Units
  on different stripes never conflict. A stripe's counter moves only when its
  versions commit, so every version numbered at or below min(n_s * STRIPES + s) is
  committed: the change feed reads up to that watermark (store.py `changes`).
  Versions of one resource are numbered in order: a unit numbers its write above
  the version it replaces (a Lamport clock).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

from pymongo import ReplaceOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhirserver.errors import Contention
from fhirserver.search.query import IndexEntry, SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import Job, SearchResult, Version, VersionConflict
from fhirserver.storage.mongo.documents import (
    INDEX_FIELDS,
    Document,
    body_chunks,
    index_fields,
    job_document,
    keys_filter,
    resource_document,
    resource_key,
    version_document,
)
from fhirserver.storage.mongo.reads import Reads
from fhirserver.storage.mongo.search import JOIN_KEYS

logger = logging.getLogger("fhirserver.storage.mongo")

# Change-counter documents. More stripes: fewer collisions between concurrent units
# (a collision costs one quick retry); each change-feed read looks at all of them.
STRIPES = 64


def stripe_id(stripe: int) -> str:
    return f"changes/{stripe:02d}"


def next_number(last: int, above: int) -> int:
    """The stripe's next n: past `last`, and numbering a version above seq `above`."""
    return max(last + 1, above // STRIPES + 1)


def seq_of(number: int, stripe: int) -> int:
    return number * STRIPES + stripe


def guard_id(query: SearchQuery) -> str:
    """The same for the same criteria, whatever their order in the request."""
    clauses = sorted(repr(clause) for clause in query.clauses)
    text = repr((query.resource_types, clauses))
    return hashlib.sha256(text.encode()).hexdigest()


async def begin(
    client: AsyncMongoClient[Document],
    database: AsyncDatabase[Document],
    stripe: int,
    max_time_ms: int | None = None,
    join_keys: int = JOIN_KEYS,
) -> MongoUnitOfWork:
    """Start a transaction holding stripe `stripe`'s counter, numbering from the
    highest n of every stripe in its snapshot: a unit that begins after another
    committed, in any process, numbers its versions above that one's (so a change
    made after a Subscription was written is numbered after it, and history's order
    is the order of commits that did not overlap). A collision on the stripe raises
    the driver's TransientTransactionError: the caller runs the unit again."""
    session = client.start_session()
    await session.start_transaction(
        read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
    )
    try:
        counter = await database.counters.find_one_and_update(
            {"_id": stripe_id(stripe)},
            {"$inc": {"units": 1}},
            session=session,
            projection={"n": 1},
        )
        stripes = database.counters.find(
            {"_id": {"$in": [stripe_id(s) for s in range(STRIPES)]}},
            {"n": 1},
            session=session,
            max_time_ms=max_time_ms,
        )
        highest = max([int(document["n"]) for document in await stripes.to_list(None)] or [0])
    except BaseException:
        await abort_transaction(session)
        await session.end_session()
        raise
    if counter is None:
        await abort_transaction(session)
        await session.end_session()
        raise RuntimeError("the change counters are missing: open() creates them")
    number = max(int(counter["n"]), highest)
    return MongoUnitOfWork(database, session, stripe, number, max_time_ms, join_keys)


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
        stripe: int,
        number: int,
        max_time_ms: int | None = None,
        join_keys: int = JOIN_KEYS,
    ) -> None:
        super().__init__(database, session, max_time_ms, join_keys)
        self.session = session
        self.stripe = stripe
        # The stripe's n as taken, and the last n this unit numbered a version with.
        self._first_number = self.number = number
        self._pending: list[tuple[Version, tuple[IndexEntry, ...]]] = []
        self._guarded: set[str] = set()
        # The version of each resource as this unit first read it (0: absent).
        self._seen: dict[str, int] = {}

    def _next_seq(self, above: int) -> int:
        self.number = next_number(self.number, above)
        return seq_of(self.number, self.stripe)

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
        seqs: dict[int, int] = {}
        for version, index in pending:
            key = resource_key(version.resource_type, version.id)
            now = currents.get(key)
            if version.version != (now[0] + 1 if now else 1):
                if version.version == self._seen.get(key, -1) + 1:
                    # It was the successor of what this unit read: a concurrent unit
                    # wrote the resource since (a server's snapshot read would have
                    # had the write conflict instead).
                    raise Contention(f"{key} was changed by a concurrent write; try again")
                raise VersionConflict(f"{key} has moved on")
            seq = self._next_seq(now[1] if now else 0)
            seqs[id(version)] = seq
            versions.append(version_document(version, seq))
            if now is not None:
                until = {"$set": {"until": to_micros(version.last_updated)}}
                replaced.append(UpdateOne({"_id": now[1]}, until))
            currents[key] = (version.version, seq)
            resources[key] = resource_document(version, seq, index)
        chunks = [chunk for v, _ in pending for chunk in body_chunks(v, seqs[id(v)])]
        if chunks:
            await self._db.bodies.insert_many(chunks, session=self.session)
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

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        found = await super().read(resource_type, resource_id)
        self._saw(resource_key(resource_type, resource_id), found)
        return found

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        found = await super().read_many(keys)
        for key in keys:
            self._saw(resource_key(*key), found.get(key))
        return found

    async def match(self, query: SearchQuery, limit: int, decides: bool = True) -> list[Version]:
        found = await super().match(query, limit)
        for version in found:
            self._saw(resource_key(version.resource_type, version.id), version)
        if decides:
            await self._guard(guard_id(query))
        return found

    async def search(self, query: SearchQuery) -> SearchResult:
        # A search inside a unit is there to decide what to write (an AuditEvent not
        # recorded yet, a meeting code not taken): guarded as a conditional match is.
        found = await super().search(query)
        await self._guard(guard_id(query))
        return found

    def _saw(self, key: str, version: Version | None) -> None:
        self._seen.setdefault(key, 0 if version is None else version.version)

    async def _guard(self, name: str) -> None:
        """Write the guard document of what this unit decided on: a concurrent unit
        that decided on the same now conflicts with this one. `at` (the database's
        clock) lets the TTL index remove guards an hour after their last use; one
        removed and written again by two units still conflicts (both insert it)."""
        if name in self._guarded:
            return
        self._guarded.add(name)
        await self._db.guards.update_one(
            {"_id": name},
            {"$inc": {"n": 1}, "$currentDate": {"at": True}},
            upsert=True,
            session=self.session,
        )

    async def write(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        self._pending.append((version, index))

    async def set_index(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        await self._flush()
        fields: Document = {field: [] for field in INDEX_FIELDS if field != "sort"}
        fields.update(index_fields(index))
        await self._db.resources.update_one(
            {"type": version.resource_type, "id": version.id, "version": version.version},
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

    async def commit(self, deadline: float) -> None:
        """Commit; a commit whose result is unknown (a failover, a lost reply) is sent
        again until `deadline` (time.monotonic()), as the driver documentation advises:
        committing again is safe."""
        await self._flush()
        if self.number != self._first_number:
            await self._db.counters.update_one(
                {"_id": stripe_id(self.stripe)},
                {"$max": {"n": self.number}},
                session=self.session,
            )
        while True:
            try:
                await self.session.commit_transaction()
                return
            except PyMongoError as exc:
                unknown = exc.has_error_label("UnknownTransactionCommitResult")
                if not unknown or time.monotonic() > deadline:
                    raise

    async def abort(self) -> None:
        await abort_transaction(self.session)

    async def end(self) -> None:
        await self.session.end_session()
