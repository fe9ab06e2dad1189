"""The baseline: a bare Starlette app storing request bytes in SQLite, with no FHIR logic.

POST /fhir/Patient inserts the body under a new id and echoes it back (201, Location);
GET /fhir/Patient/{id} selects it and returns the bytes. Its SQLite use copies
SqliteStore's so the comparison measures only what fhirserver adds: the same connection
settings (schema.connect: WAL, synchronous=NORMAL), one writer thread with one
connection, four reader threads with a connection each, all reached via run_in_executor.
It takes no asyncio.Lock around writes: SqliteStore's guards read-check-write units of
work, which a bare insert does not need, so that lock is part of what is measured.

Run as `python -m bench.baseline --store PATH`; it prints one line with its base URL
once it is listening on a free port of 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirserver.cpu import tune_for_serving
from fhirserver.serving import run_serving
from fhirserver.storage.sqlite.schema import connect

T = TypeVar("T")
MEDIA_TYPE = "application/fhir+json"
# The same value fhirserver.config.Settings.sqlite_synchronous defaults to.
SYNCHRONOUS = "NORMAL"
BUSY_TIMEOUT_MS = 10_000
# As many reader threads as SqliteStore opens by default.
READERS = 4


class RowStore:
    """Bytes by id in one table, on threads laid out as in SqliteStore."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(READERS, thread_name_prefix="sqlite-reader")

    def _connect(self) -> sqlite3.Connection:
        connection = connect(self.path, SYNCHRONOUS, BUSY_TIMEOUT_MS)
        self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    async def _on_writer(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._writer_pool, lambda: job(self._writer)
        )

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._writer_pool, self._connect)
        await self._on_writer(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS patients (id TEXT PRIMARY KEY, body BLOB NOT NULL)"
            )
        )

    async def close(self) -> None:
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        for connection in self._connections:
            connection.close()

    async def insert(self, row_id: str, body: bytes) -> None:
        # Autocommit (isolation_level=None): one transaction per insert, as one per create.
        await self._on_writer(
            lambda c: c.execute("INSERT INTO patients (id, body) VALUES (?, ?)", (row_id, body))
        )

    async def select(self, row_id: str) -> bytes | None:
        row: tuple[bytes] | None = await asyncio.get_running_loop().run_in_executor(
            self._reader_pool,
            lambda: (
                self._reader()
                .execute("SELECT body FROM patients WHERE id = ?", (row_id,))
                .fetchone()
            ),
        )
        return None if row is None else row[0]


def create_app(path: str) -> Starlette:
    store = RowStore(path)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    async def create(request: Request) -> Response:
        body = await request.body()
        row_id = str(uuid.uuid4())
        await store.insert(row_id, body)
        location = f"{request.url}/{row_id}"
        return Response(body, 201, headers={"Location": location}, media_type=MEDIA_TYPE)

    async def read(request: Request) -> Response:
        body = await store.select(request.path_params["id"])
        if body is None:
            return Response(status_code=404)
        return Response(body, media_type=MEDIA_TYPE)

    routes = [
        Route("/fhir/Patient", create, methods=["POST"]),
        Route("/fhir/Patient/{id}", read, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


async def serve(store: str) -> None:
    # Started as fhirserver.serving starts uvicorn (same options, port 0, the same event
    # loop), so both servers listen on sockets set up the same way, e.g. with
    # TCP_NODELAY, and the loop's and the HTTP parser's costs are the same on both sides:
    # httptools, as fhirserver's connection guard is built on it.
    config = uvicorn.Config(
        create_app(store),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http="httptools",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        print(
            f"baseline: bare Starlette at http://127.0.0.1:{port}/fhir (store {store})", flush=True
        )
    await task


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    # The interpreter set up as fhirserver serves (collector thresholds, switch interval).
    tune_for_serving()
    parser.add_argument("--store", required=True, help="SQLite file")
    run_serving(serve(parser.parse_args().store))


if __name__ == "__main__":
    main()
