"""A resource up to the request body limit (16 MiB, config.py) is stored and read back
whole on every backend: MongoDB keeps a body over 4 MiB apart from its documents, in
chunks (storage/mongo/documents.py `BODY_CHUNK`), so that no document reaches MongoDB's
16 MiB limit (MongoDB manual "BSON Document Size Limit", as GridFS does for files)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import bson
import orjson

from fhirserver.config import Settings
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import HistoryQuery, Store, Version
from fhirserver.storage.mongo import MongoStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def binary(size: int, marker: str) -> bytes:
    data = base64.b64encode(os.urandom(size * 3 // 4)).decode()
    return orjson.dumps(
        {"resourceType": "Binary", "id": marker, "contentType": "application/pdf", "data": data}
    )


async def test_a_resource_at_the_body_limit_is_stored_and_read_back_whole(store: Store) -> None:
    # 15 MiB, and a resource whose request body was at the limit, as stored (with meta).
    near_limit = Settings().max_body_bytes + 100
    first, second = binary(15 * 1024 * 1024, "big"), binary(near_limit, "big")
    async with store.unit_of_work() as unit:
        await unit.write(Version("Binary", "big", 1, T0, "POST", first), ())
    async with store.unit_of_work() as unit:
        await unit.write(Version("Binary", "big", 2, T0, "PUT", second), ())
    current = await store.read("Binary", "big")
    assert current is not None and current.body == second
    old = await store.vread("Binary", "big", 1)
    assert old is not None and old.body == first
    versions, _ = await store.history(HistoryQuery(resource_type="Binary", id="big"))
    assert [v.body for v in versions] == [second, first]
    assert [v.body for v in await store.changes(0, 10)] == [first, second]
    found = await store.search(parse_search(("Binary",), [("_id", "big")]))
    assert [v.body for v in found.matches] == [second]
    if isinstance(store, MongoStore):
        # mongomock does not enforce the server's limit: measure what a server would get.
        database = store._db.sync  # type: ignore[attr-defined]
        for name in database.list_collection_names():
            for document in database[name].find():
                assert len(bson.encode(document)) < 16 * 1024 * 1024, (name, document["_id"])
