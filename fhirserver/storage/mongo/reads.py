"""The read side of the Store protocol on MongoDB (reads, history, search with R4
search.html#paging and #include), in a session (a unit's transaction, or a snapshot)
or without one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.errors import TooCostly
from fhirserver.search.query import SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import HistoryQuery, SearchResult, Version
from fhirserver.storage.mongo.documents import (
    INDEX_FIELDS,
    Document,
    chunk_id,
    keys_filter,
    version_of,
)
from fhirserver.storage.mongo.includes import find_includes
from fhirserver.storage.mongo.search import JOIN_KEYS, Compiler, page_pipelines
from fhirserver.storage.paging import PageRequest

# What a read returns of a resource document: the version, not its index.
READ_PROJECTION: Document = {field: 0 for field in INDEX_FIELDS}


async def versions_of(
    database: AsyncDatabase[Document],
    session: AsyncClientSession | None,
    documents: Sequence[Document],
) -> list[Version]:
    """The versions of these documents, with the bodies kept apart read back in."""
    kept = {
        chunk_id(document["seq"] if "seq" in document else document["_id"], n): document
        for document in documents
        for n in range(document.get("chunks", 0))
    }
    if kept:
        cursor = database.bodies.find({"_id": {"$in": list(kept)}}, session=session)
        data = {chunk["_id"]: bytes(chunk["data"]) for chunk in await cursor.to_list(None)}
        for document in documents:
            if document.get("chunks"):
                seq = document["seq"] if "seq" in document else document["_id"]
                document["body"] = b"".join(
                    data[chunk_id(seq, n)] for n in range(document["chunks"])
                )
    return [version_of(document) for document in documents]


class Reads:
    """The reads of the protocol, in the session given (None: outside any)."""

    def __init__(
        self,
        database: AsyncDatabase[Document],
        session: AsyncClientSession | None,
        max_time_ms: int | None = None,
        join_keys: int = JOIN_KEYS,
    ):
        """`max_time_ms`: the time limit of each query a search or history page runs,
        and of a semi-join's batches together; `join_keys`: the most keys a chain or
        `_has` lists in a filter (mongo/search.py)."""
        self._db = database
        self._session = session
        self._max_time_ms = max_time_ms
        self._join_keys = join_keys
        # find() names the limit max_time_ms; aggregate() and count_documents() maxTimeMS.
        self._limit: Document = {} if max_time_ms is None else {"maxTimeMS": max_time_ms}
        self._find_limit: Document = {} if max_time_ms is None else {"max_time_ms": max_time_ms}

    async def _versions(self, documents: Sequence[Document]) -> list[Version]:
        return await versions_of(self._db, self._session, documents)

    async def _ready(self) -> None:
        """Before every read: a unit of work sends its buffered writes, to read them."""

    async def _find(
        self, collection: str, where: Document, projection: Document | None = None
    ) -> list[Document]:
        await self._ready()
        cursor = self._db[collection].find(
            where, projection, session=self._session, **self._find_limit
        )
        return await cursor.to_list(None)

    async def _find_resources(
        self, where: Document, projection: Document, limit: int | None = None
    ) -> list[Document]:
        await self._ready()
        cursor = self._db.resources.find(
            where, projection, session=self._session, **self._find_limit
        )
        if limit is not None:
            cursor = cursor.limit(limit)
        return await cursor.to_list(None)

    async def _aggregate_resources(self, pipeline: list[Document]) -> list[Document]:
        await self._ready()
        cursor = await self._db.resources.aggregate(pipeline, session=self._session, **self._limit)
        return await cursor.to_list(None)

    def _compiler(self) -> Compiler:
        return Compiler(self._find_resources, self._aggregate_resources, self._join_keys)

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        await self._ready()
        document = await self._db.resources.find_one(
            {"type": resource_type, "id": resource_id},
            READ_PROJECTION,
            session=self._session,
            **self._find_limit,
        )
        return None if document is None else (await self._versions([document]))[0]

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        await self._ready()
        document = await self._db.versions.find_one(
            {"type": resource_type, "id": resource_id, "version": version},
            session=self._session,
            **self._find_limit,
        )
        return None if document is None else (await self._versions([document]))[0]

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
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
            self._db.versions.find(page, session=self._session, **self._find_limit)
            .sort("_id", -1)
            .limit(query.count)
        )
        documents = await cursor.to_list(None)
        total = None
        # The whole server's history is not counted: that would read every version on
        # every page (Bundle.total is optional for a history, R4 bundle.html).
        if query.with_total and where:
            total = await self._db.versions.count_documents(
                where, session=self._session, **self._limit
            )
        return await self._versions(documents), total

    async def search(self, query: SearchQuery) -> SearchResult:
        await self._ready()
        request = PageRequest.of(query)
        compiler = self._compiler()
        where = await compiler.filter(query)
        documents, names = await self._rows(
            compiler, where, query, request.limit, request.after, request.backwards
        )
        page = request.page(documents, lambda document: [document[name] for name in names])
        total = None
        if request.counts_total and compiler.joins:
            total = await self._count_joined(compiler, where, query)
        elif request.counts_total:
            total = await self._db.resources.count_documents(
                where, session=self._session, **self._limit
            )
        included = await find_includes(
            self._find_resources, query.includes, page.rows, query.max_included
        )
        return page.result(
            await self._versions(page.rows),
            await self._versions(included.resources),
            total,
            included.complete,
        )

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        documents = await self._find("resources", keys_filter(keys), READ_PROJECTION)
        versions = await self._versions(documents)
        return {(v.resource_type, v.id): v for v in versions}

    async def match(self, query: SearchQuery, limit: int, decides: bool = True) -> list[Version]:
        await self._ready()
        compiler = self._compiler()
        where = await compiler.filter(query)
        if compiler.joins:
            documents, _ = await self._rows(compiler, where, query, limit, None, False)
            return await self._versions(documents)
        cursor = self._db.resources.find(
            where, READ_PROJECTION, session=self._session, **self._find_limit
        )
        return await self._versions(await cursor.limit(limit).to_list(None))

    async def _rows(
        self,
        compiler: Compiler,
        where: Document,
        query: SearchQuery,
        limit: int,
        after: list[Any] | None,
        backwards: bool,
    ) -> tuple[list[Document], list[str]]:
        """Up to `limit` matches in the page's order from `after`, and the names of
        their sort keys. With semi-joins, candidates are read a batch at a time from
        the last one read, and kept when they meet the joins."""
        if not compiler.joins:
            return await self._page(where, query, limit, after, backwards)
        deadline = self._deadline()
        rows: list[Document] = []
        while len(rows) < limit:
            batch, names = await self._page(where, query, self._join_keys, after, backwards)
            rows += await compiler.keep(batch)
            if len(batch) < self._join_keys:
                break
            after = [batch[-1][name] for name in names]
            self._check(deadline)
        return rows[:limit], names

    async def _page(
        self,
        where: Document,
        query: SearchQuery,
        limit: int,
        after: list[Any] | None,
        backwards: bool,
    ) -> tuple[list[Document], list[str]]:
        """Up to `limit` documents in the page's order from `after`, and the names of
        their sort keys."""
        pipelines, names = page_pipelines(where, query, limit, after, backwards)
        rows: list[Document] = []
        for pipeline in pipelines:
            rows += await self._aggregate_resources(pipeline)
            if len(rows) >= limit:
                break
        return rows[:limit], names

    async def _count_joined(self, compiler: Compiler, where: Document, query: SearchQuery) -> int:
        """Every match counted, a batch of candidates at a time (`_total=accurate`)."""
        deadline = self._deadline()
        counted, after = 0, None
        while True:
            batch, names = await self._page(where, query, self._join_keys, after, False)
            counted += len(await compiler.keep(batch))
            if len(batch) < self._join_keys:
                return counted
            after = [batch[-1][name] for name in names]
            self._check(deadline)

    def _deadline(self) -> float | None:
        if self._max_time_ms is None:
            return None
        return time.monotonic() + self._max_time_ms / 1000

    def _check(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TooCostly(
                "The search took longer than the server's time limit;"
                " narrow its chained or _has criteria"
            )
