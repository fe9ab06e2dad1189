"""MongoDB writes with one and two store instances (issue 17): creates and contended
updates through the interaction layer, 16 writers at once, next to a floor measured in
the same run (the same documents inserted through the same client, no store logic).

Without BENCH_MONGODB_URL the store runs on mongomock through the test adapter (per-
document write conflicts, no shared lock): the figures are then the Python cost of the
store's work and of its retries, not MongoDB's throughput (mongomock has no indexes:
each query reads the whole collection, so the store's several queries per write cost
more as the collection grows, where the floor's inserts read nothing). With it (a replica set, e.g.
`mongodb://localhost:27017/?replicaSet=rs0&directConnection=true`), a fresh database on
that server, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.mongo import MongoStore
from tests.mongomock_async import AsyncMockClient

WRITERS = 16
CREATES = 600
UPDATES = 300


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Bench{n}", "given": ["Ann"]}],
        "identifier": [{"system": "urn:bench", "value": str(n)}],
        "birthDate": "1970-01-01",
    }


async def _timed(count: int, work: Callable[[int], Awaitable[Any]]) -> float:
    """`count` calls of `work`, WRITERS at a time; per second."""
    queue = iter(range(count))

    async def writer() -> None:
        for n in queue:
            await work(n)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    return count / (time.perf_counter() - started)


async def _stores(instances: int) -> tuple[list[MongoStore], Callable[[], Awaitable[None]]]:
    url = os.environ.get("BENCH_MONGODB_URL")
    if url:
        name = f"fhirbench_{uuid.uuid4().hex[:10]}"
        base = url.split("?")[0].rstrip("/")
        query = "?" + url.split("?", 1)[1] if "?" in url else ""
        stores = [MongoStore(f"{base}/{name}{query}") for _ in range(instances)]
    else:
        client = AsyncMockClient()
        stores = [
            MongoStore("mongodb://mock/fhirbench", client=client)  # type: ignore[arg-type]
            for _ in range(instances)
        ]
    for store in stores:
        await store.open()

    async def close() -> None:
        if url:
            await stores[0].database.client.drop_database(stores[0].database.name)
        for store in stores:
            await store.close()

    return stores, close


async def _floor() -> float:
    """Inserting the documents a create writes (a version and a resource) directly."""
    stores, close = await _stores(1)
    database = stores[0].database

    async def insert(n: int) -> None:
        document = {"_id": f"Patient/{n}", "type": "Patient", "id": str(n), "body": b"{}"}
        await database.bench_resources.insert_many([document])
        await database.bench_versions.insert_many([{**document, "_id": n}])

    try:
        return await _timed(CREATES, insert)
    finally:
        await close()


async def _creates(instances: int) -> float:
    stores, close = await _stores(instances)
    context = WriteContext()
    try:
        return await _timed(
            CREATES, lambda n: crud.create(stores[n % instances], context, "Patient", patient(n))
        )
    finally:
        await close()


async def _contended(instances: int) -> tuple[float, int]:
    """Every writer updates the same resource: (updates per second, versions written)."""
    stores, close = await _stores(instances)
    context = WriteContext()
    body = {**patient(0), "id": "shared"}
    try:
        await crud.update(stores[0], context, "Patient", "shared", body)
        rate = await _timed(
            UPDATES,
            lambda n: crud.update(
                stores[n % instances], context, "Patient", "shared", {**body, "gender": "other"}
            ),
        )
        current = await stores[0].read("Patient", "shared")
        return rate, 0 if current is None else current.version
    finally:
        await close()


async def run() -> None:
    backend = "a MongoDB server" if os.environ.get("BENCH_MONGODB_URL") else "mongomock"
    print(f"mongo: {WRITERS} writers on {backend}", flush=True)
    floor = await _floor()
    print(f"  floor: two bare inserts per create          {floor:8.0f} /s", flush=True)
    for instances in (1, 2):
        rate = await _creates(instances)
        print(
            f"  creates, {instances} store instance(s)            {rate:8.0f} /s"
            f"   {rate / floor:5.2f} of the floor",
            flush=True,
        )
    for instances in (1, 2):
        rate, versions = await _contended(instances)
        print(
            f"  updates of one resource, {instances} instance(s)   {rate:8.0f} /s"
            f"   {rate / floor:5.2f} of the floor; {versions} versions (expected {UPDATES + 1})",
            flush=True,
        )
