"""The read side of the Store protocol on MongoDB (reads, history, search with R4
search.html#paging and #include), in a session (a unit's transaction, or a snapshot)
or without one."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.search.query import SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import HistoryQuery, SearchResult, Version
from fhirserver.storage.mongo.documents import INDEX_FIELDS, Document, keys_filter, version_of
from fhirserver.storage.mongo.includes import find_includes
from fhirserver.storage.mongo.search import Compiler, page_pipeline
from fhirserver.storage.paging import PageRequest

# What a read returns of a resource document: the version, not its index.
READ_PROJECTION: Document = {field: 0 for field in INDEX_FIELDS}


class Reads:
    """The reads of the protocol, in the session given (None: outside any)."""

    def __init__(
        self,
        database: AsyncDatabase[Document],
        session: AsyncClientSession | None,
        max_time_ms: int | None = None,
    ):
        """`max_time_ms`: the time limit of each query a search or history page runs."""
        self._db = database
        self._session = session
        # find() names the limit max_time_ms; aggregate() and count_documents() maxTimeMS.
        self._limit: Document = {} if max_time_ms is None else {"maxTimeMS": max_time_ms}
        self._find_limit: Document = {} if max_time_ms is None else {"max_time_ms": max_time_ms}

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
        if query.with_total:
            total = await self._db.versions.count_documents(
                where, session=self._session, **self._limit
            )
        return [version_of(d) for d in documents], total

    async def search(self, query: SearchQuery) -> SearchResult:
        await self._ready()
        request = PageRequest.of(query)
        where = await Compiler(self._find_resources).filter(query)
        pipeline, names = page_pipeline(
            where, query, request.limit, request.after, request.backwards
        )
        cursor = await self._db.resources.aggregate(pipeline, session=self._session, **self._limit)
        documents = await cursor.to_list(None)
        page = request.page(documents, lambda document: [document[name] for name in names])
        total = None
        if request.counts_total:
            total = await self._db.resources.count_documents(
                where, session=self._session, **self._limit
            )
        included = await find_includes(
            self._find_resources, query.includes, page.rows, query.max_included
        )
        return page.result(
            [version_of(d) for d in page.rows],
            [version_of(d) for d in included.resources],
            total,
            included.complete,
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
        cursor = self._db.resources.find(
            where, READ_PROJECTION, session=self._session, **self._find_limit
        )
        return [version_of(document) for document in await cursor.limit(limit).to_list(None)]
