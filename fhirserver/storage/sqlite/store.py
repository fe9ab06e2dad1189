"""SqliteStore: the Store protocol over one SQLite file.

Writes go through one connection on one thread, serialised by an asyncio lock and
by SQLite's own write lock (BEGIN IMMEDIATE), so a read-check-write inside a unit of
work cannot race another writer, in this process or another. Reads use a small pool
of connections on their own threads; WAL lets them run beside the writer.

Group commit: units of work that queue for the writer share one transaction. Each runs
inside its own savepoint, so a unit that fails rolls back alone and the others keep
their writes; the transaction commits once when no unit waits any more (or the group
is full), and every unit of the group returns only after that commit, so nothing is
acknowledged before it is durable. One commit writes each page the group touched to
the WAL once (the index B-trees' shared pages above all) instead of once per unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from fhirserver.errors import TooCostly, Unavailable
from fhirserver.search.query import IndexEntry, SearchQuery
from fhirserver.search.time import to_micros
from fhirserver.storage.base import (
    HistoryQuery,
    Job,
    Record,
    SearchResult,
    UnitOfWork,
    Version,
    VersionConflict,
)
from fhirserver.storage.paging import PageRequest
from fhirserver.storage.sqlite import records
from fhirserver.storage.sqlite.includes import find_includes
from fhirserver.storage.sqlite.index import delete_entries, insert_entries
from fhirserver.storage.sqlite.jobs import claim, finish, retry, write_jobs
from fhirserver.storage.sqlite.schema import (
    READER_CACHE_KIB,
    VERSION_COLUMNS,
    WRITER_CACHE_KIB,
    connect,
    create_schema,
    version_of,
)
from fhirserver.storage.sqlite.search import compile_count, compile_matches, compile_page

T = TypeVar("T")
# Keys looked up per statement by read_many: well inside SQLite's 32,766 variables.
_KEYS_PER_QUERY = 500
# SQLite virtual-machine steps between two looks at a search's deadline: ~10 ms of
# work. Each look takes the GIL, which under load can mean a wait; 100 looks a second
# cost nothing noticeable.
PROGRESS_STEPS = 100_000
# Threads for reads by id, apart from the searches' threads: a read never queues
# behind slow searches (issue 20).
LOOKUP_THREADS = 2
# Units of work one commit takes at most: under a steady queue of writers the first of a
# group still gets its answer after a bounded wait.
MAX_GROUP = 32
Row = tuple[Any, ...]


def _read_current(
    connection: sqlite3.Connection, resource_type: str, resource_id: str
) -> Row | None:
    row: Row | None = connection.execute(
        f"SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v ON v.seq = r.seq "
        "WHERE r.type = ? AND r.id = ?",
        (resource_type, resource_id),
    ).fetchone()
    return row


def _history_where(query: HistoryQuery) -> tuple[str, list[Any]]:
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    if query.resource_type is not None:
        where.append("v.type = ?")
        args.append(query.resource_type)
    if query.id is not None:
        where.append("v.id = ?")
        args.append(query.id)
    if query.since is not None:
        where.append("v.last_updated >= ?")
        args.append(to_micros(query.since))
    if query.at is not None:
        low, high = (to_micros(moment) for moment in query.at)
        # Current during [low, high): written before `high`, not replaced before `low`.
        where.append(
            "v.last_updated < ? AND NOT EXISTS (SELECT 1 FROM versions n WHERE n.type = v.type"
            " AND n.id = v.id AND n.version = v.version + 1 AND n.last_updated <= ?)"
        )
        args.extend([high, low])
    return " AND ".join(where), args


@contextmanager
def _snapshot(connection: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so that several statements see the same data; inside a
    unit of work the unit's own transaction already is one."""
    if connection.in_transaction:
        yield
        return
    connection.execute("BEGIN")
    try:
        yield
    finally:
        connection.execute("COMMIT")


def _vread(
    connection: sqlite3.Connection, resource_type: str, resource_id: str, version: int
) -> Version | None:
    row = connection.execute(
        f"SELECT {VERSION_COLUMNS} FROM versions v WHERE v.type = ? AND v.id = ? AND v.version = ?",
        (resource_type, resource_id, version),
    ).fetchone()
    return None if row is None else version_of(row)


def _read_many(
    connection: sqlite3.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Version]:
    rows: list[Row] = []
    with _snapshot(connection):
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            batch = keys[start : start + _KEYS_PER_QUERY]
            rows += connection.execute(
                f"WITH k (type, id) AS (VALUES {', '.join(['(?, ?)'] * len(batch))}) "
                f"SELECT {VERSION_COLUMNS} FROM k "
                "JOIN resources r ON r.type = k.type AND r.id = k.id "
                "JOIN versions v ON v.seq = r.seq",
                [part for key in batch for part in key],
            ).fetchall()
    versions = [version_of(row) for row in rows]
    return {(v.resource_type, v.id): v for v in versions}


def _history(
    connection: sqlite3.Connection, query: HistoryQuery
) -> tuple[list[Version], int | None]:
    where, args = _history_where(query)
    page_where, page_args = where, [*args, query.count]
    if query.before_seq is not None:
        page_where += " AND v.seq < ?"
        page_args.insert(-1, query.before_seq)
    with _snapshot(connection):
        rows = connection.execute(
            f"SELECT {VERSION_COLUMNS} FROM versions v WHERE {page_where} "
            "ORDER BY v.seq DESC LIMIT ?",
            page_args,
        ).fetchall()
        total: int | None = None
        if query.with_total:
            total = connection.execute(
                f"SELECT count(*) FROM versions v WHERE {where}", args
            ).fetchone()[0]
    return [version_of(row) for row in rows], total


@contextmanager
def _interrupted_after(
    connection: sqlite3.Connection, seconds: float, steps: int = PROGRESS_STEPS
) -> Iterator[None]:
    """Statements on `connection` stop once `seconds` have passed (SQLite calls the
    progress handler every few thousand steps; a non-zero answer interrupts). An
    interrupted SELECT leaves the connection's transaction as it was."""
    end = time.monotonic() + seconds
    connection.set_progress_handler(lambda: time.monotonic() > end, steps)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        raise TooCostly(
            f"The search took longer than the server's {seconds:g} s limit;"
            " narrow its criteria or page with a smaller _count"
        ) from None
    finally:
        connection.set_progress_handler(None, 0)


@contextmanager
def _time_limit(
    connection: sqlite3.Connection, seconds: float, steps: int = PROGRESS_STEPS
) -> Iterator[None]:
    """A search thread's statements within `seconds`; its read transaction ended."""
    try:
        with _interrupted_after(connection, seconds, steps):
            yield
    finally:
        if connection.in_transaction:
            # Stopped inside its read transaction (even in the COMMIT): end it, or the
            # thread's connection would read that snapshot for good.
            connection.rollback()


def _search(connection: sqlite3.Connection, query: SearchQuery) -> SearchResult:
    request = PageRequest.of(query)
    compiled = compile_page(query, request.limit, request.after, request.backwards)
    with _snapshot(connection):
        rows = connection.execute(compiled.sql, compiled.args).fetchall()
        page = request.page(rows, lambda row: list(row[: compiled.keys]))
        matches = [version_of(row[compiled.keys :]) for row in page.rows]
        total = None
        if request.counts_total:
            total = connection.execute(*compile_count(query)).fetchone()[0]
        included = find_includes(connection, query.includes, matches, query.max_included)
    return page.result(matches, included.resources, total, included.complete)


class SqliteStore:
    def __init__(
        self,
        path: str,
        synchronous: str = "NORMAL",
        readers: int = 4,
        busy_timeout_ms: int = 10_000,
        search_timeout: float = 30.0,
        writer_cache_kib: int = WRITER_CACHE_KIB,
        reader_cache_kib: int = READER_CACHE_KIB,
    ) -> None:
        """`search_timeout`: seconds a search or history page may take (TooCostly past)."""
        if path == ":memory:" or path.startswith("file::memory:"):
            # Every connection would open its own, empty, database.
            raise ValueError("the SQLite store needs a file, not :memory:")
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.search_timeout = search_timeout
        self.progress_steps = PROGRESS_STEPS
        self._writer_cache_kib, self._reader_cache_kib = writer_cache_kib, reader_cache_kib
        self._reader_count = readers
        self._connections: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = asyncio.Lock()
        # The write transaction units of work share (group commit), while one is open,
        # and how many units wait for the lock to join it.
        self._group: _WriteGroup | None = None
        self._units_waiting = 0
        self.index_outdated = False

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(
            self._reader_count, thread_name_prefix="sqlite-reader"
        )
        self._lookup_pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="sqlite-lookup")
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(
            self._writer_pool, lambda: self._connect(self._writer_cache_kib)
        )
        # Set when an upgraded file's index must be rebuilt (the app runs a reindex).
        self.index_outdated = await self._on_writer(create_schema)

    async def close(self) -> None:
        async with self._lock:
            await self._commit_group()  # its units are waiting to be told
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        # Keeps planner statistics current (sqlite.org/lang_analyze.html#pragopt).
        self._writer_pool.submit(lambda: self._writer.execute("PRAGMA optimize")).result()
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        self._lookup_pool.shutdown(wait=True)
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    def _connect(self, cache_kib: int) -> sqlite3.Connection:
        connection = connect(self.path, self.synchronous, self.busy_timeout_ms, cache_kib)
        self._connections.append(connection)
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect(self._reader_cache_kib)
        return connection

    async def _on_reader(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, lambda: job(self._reader())
        )

    async def _on_lookup(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._lookup_pool, lambda: job(self._reader())
        )

    async def _timed(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """`job` on a search thread, within the search time limit."""

        def run(connection: sqlite3.Connection) -> T:
            with _time_limit(connection, self.search_timeout, self.progress_steps):
                return job(connection)

        return await self._on_reader(run)

    def _send(self, job: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `job` on the writer thread; jobs run in the order sent."""
        return asyncio.get_running_loop().run_in_executor(
            self._writer_pool, lambda: job(self._writer)
        )

    async def _on_writer(self, job: Callable[[sqlite3.Connection], T]) -> T:
        try:
            # Shielded: a cancelled request must not leave the writer mid-transaction.
            return await asyncio.shield(self._send(job))
        except sqlite3.OperationalError as exc:
            raise _busy_or(exc) from None

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        row = await self._on_lookup(lambda c: _read_current(c, resource_type, resource_id))
        return None if row is None else version_of(row)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        return await self._on_lookup(lambda c: _vread(c, resource_type, resource_id, version))

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
        return await self._timed(lambda c: _history(c, query))

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        return await self._on_lookup(lambda c: _read_many(c, keys))

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._timed(lambda c: _search(c, query))

    async def scan(self, after: tuple[str, str] | None, limit: int) -> list[Version]:
        start = after or ("", "")
        rows = await self._on_reader(
            lambda c: c.execute(
                f"SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v ON v.seq = r.seq "
                "WHERE (r.type, r.id) > (?, ?) AND v.body IS NOT NULL "
                "ORDER BY r.type, r.id LIMIT ?",
                (*start, limit),
            ).fetchall()
        )
        return [version_of(row) for row in rows]

    async def count(self) -> int:
        count: int = await self._on_reader(
            lambda c: c.execute(
                "SELECT count(*) FROM resources r JOIN versions v ON v.seq = r.seq "
                "WHERE v.body IS NOT NULL"
            ).fetchone()[0]
        )
        return count

    async def changes(self, after_seq: int, limit: int) -> list[Version]:
        # Write transactions take turns (BEGIN IMMEDIATE) and a seq is drawn inside one,
        # so a seq commits only after every lower one has: a reader skips none.
        rows = await self._on_reader(
            lambda c: c.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions v WHERE v.seq > ? ORDER BY v.seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
        return [version_of(row) for row in rows]

    async def claim_job(
        self, kinds: Sequence[str], owner: str, now: datetime, lease: timedelta
    ) -> Job | None:
        return await self._between_units(lambda c: claim(c, kinds, owner, now, lease))

    async def finish_job(self, job: Job) -> bool:
        return await self._between_units(lambda c: finish(c, job))

    async def retry_job(self, job: Job, due: datetime) -> bool:
        return await self._between_units(lambda c: retry(c, job, due))

    async def put_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None
    ) -> None:
        await self._between_units(lambda c: records.put(c, kind, key, body, expires))

    async def get_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        return await self._on_reader(lambda c: records.get(c, kind, key, now))

    async def list_records(self, kind: str, now: datetime) -> list[Record]:
        return await self._on_reader(lambda c: records.listed(c, kind, now))

    async def delete_record(
        self, kind: str, key: str, only_if: dict[str, Any] | None = None
    ) -> bool:
        return await self._between_units(lambda c: records.delete(c, kind, key, only_if))

    async def replace_record(
        self,
        kind: str,
        key: str,
        expected: dict[str, Any],
        body: dict[str, Any],
        expires: datetime | None,
        now: datetime,
    ) -> bool:
        return await self._between_units(
            lambda c: records.replace(c, kind, key, expected, body, expires, now)
        )

    async def add_record(
        self, kind: str, key: str, body: dict[str, Any], expires: datetime | None, now: datetime
    ) -> bool:
        return await self._between_units(lambda c: records.add(c, kind, key, body, expires, now))

    async def take_record(self, kind: str, key: str, now: datetime) -> dict[str, Any] | None:
        return await self._between_units(lambda c: records.take(c, kind, key, now))

    async def _between_units(self, statement: Callable[[sqlite3.Connection], T]) -> T:
        """Run a statement on the writer while no unit of work is open: inside one it
        would join the unit's transaction, and vanish if the unit rolled back. An open
        group is committed first, for the same reason."""
        async with self._lock:
            await self._commit_group()
            return await self._on_writer(statement)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        self._units_waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._units_waiting -= 1
        joined: _WriteGroup | None = None
        try:
            if self._group is None:
                self._group = _WriteGroup(asyncio.get_running_loop().create_future())
            unit = _SqliteUnitOfWork(self, self._group)
            try:
                yield unit
            except BaseException:
                await self._on_writer(unit.rollback)
                raise
            else:
                await self._on_writer(unit.release)
                if unit.begun:
                    joined = self._group
            finally:
                # Go on with the group while other units wait to join it; commit it
                # when none does (or it is full), here or in a task queued behind them.
                group = self._group
                if group is not None:
                    group.units += unit.begun
                    if self._units_waiting and group.units < MAX_GROUP:
                        if group.closer is None:
                            group.closer = asyncio.create_task(self._close(group))
                    else:
                        await self._commit_group()
        finally:
            self._lock.release()
        if joined is not None:
            # Acknowledged only once the group's transaction is committed; a failed
            # commit fails every unit of the group.
            await asyncio.shield(joined.committed)

    async def _close(self, group: _WriteGroup) -> None:
        async with self._lock:
            if self._group is group:
                await self._commit_group()

    async def _commit_group(self) -> None:
        """Commit the open group, if any (the lock held). Its units learn the outcome
        from `committed`, set by the COMMIT itself: a caller cancelled meanwhile does
        not change what the others are told, and a unit that failed on its own keeps
        its own error."""
        group, self._group = self._group, None
        if group is None:
            return
        try:
            commit = self._send(group.commit)
        except RuntimeError as exc:  # the writer is shut down: nothing was committed
            group.committed.set_exception(exc)
            group.committed.exception()
            return
        commit.add_done_callback(group.settle)
        with contextlib.suppress(Exception):
            await asyncio.shield(commit)


def _busy_or(error: sqlite3.OperationalError) -> Exception:
    """The write lock held by another process past busy_timeout is 503."""
    if "locked" in str(error) or "busy" in str(error):
        return Unavailable(
            "The store is busy with another writer; try again", headers={"Retry-After": "1"}
        )
    return error


class _WriteGroup:
    """The write transaction units of work share, and the future they wait on."""

    def __init__(self, committed: asyncio.Future[None]) -> None:
        self.committed = committed
        # Whether the transaction was begun (by the first unit that writes or reads).
        self.begun = False
        self.units = 0
        self.closer: asyncio.Task[None] | None = None

    def begin(self, connection: sqlite3.Connection) -> None:
        if not self.begun:
            connection.execute("BEGIN IMMEDIATE")
            self.begun = True
        elif not connection.in_transaction:
            # SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, NOMEM): the
            # units before lost their writes, and a savepoint now would commit on its
            # own. The group fails (its COMMIT finds no transaction), and so does this.
            raise sqlite3.OperationalError("the group's transaction was rolled back")

    def settle(self, commit: asyncio.Future[None]) -> None:
        """Tell the units the COMMIT's outcome."""
        if commit.cancelled():  # the writer was shut down first
            self.committed.cancel()
            return
        error = commit.exception()
        if error is None:
            self.committed.set_result(None)
            return
        if isinstance(error, sqlite3.OperationalError):
            error = _busy_or(error)
        self.committed.set_exception(error)
        self.committed.exception()  # marked seen: no unit may be left to await it

    def commit(self, connection: sqlite3.Connection) -> None:
        if not self.begun:
            return
        try:
            connection.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open; never keep the writer in it.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


class _SqliteUnitOfWork:
    """Buffers writes so that a plain create costs one trip to the writer thread."""

    def __init__(self, store: SqliteStore, group: _WriteGroup) -> None:
        self._store = store
        self._group = group
        # Whether the unit has opened its savepoint (in the group's transaction).
        self.begun = False
        self._pending: list[tuple[Version, tuple[IndexEntry, ...]]] = []
        # Jobs to put, or to drop (None), by (kind, key): the last call for a key wins.
        self._jobs: dict[tuple[str, str], Job | None] = {}

    def _begin(self, connection: sqlite3.Connection) -> None:
        if not self.begun:
            self._group.begin(connection)
            connection.execute("SAVEPOINT unit")
            self.begun = True

    def _flush(self, connection: sqlite3.Connection) -> None:
        self._begin(connection)
        pending, self._pending = self._pending, []
        # The index rows of each resource's last write, inserted together at the end.
        indexes: dict[tuple[str, str], tuple[IndexEntry, ...]] = {}
        for version, index in pending:
            _write(connection, version)
            key = (version.resource_type, version.id)
            indexes.pop(key, None)
            if version.body is not None:
                indexes[key] = index
        insert_entries(connection, ((*key, index) for key, index in indexes.items()))
        if self._jobs:
            jobs, self._jobs = self._jobs, {}
            write_jobs(connection, jobs)

    async def _after_flush(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run a job on the writer once the buffered writes are in, so it sees them."""

        def flushed(connection: sqlite3.Connection) -> T:
            self._flush(connection)
            return job(connection)

        return await self._store._on_writer(flushed)

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        row = await self._after_flush(lambda c: _read_current(c, resource_type, resource_id))
        return None if row is None else version_of(row)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Version | None:
        return await self._after_flush(lambda c: _vread(c, resource_type, resource_id, version))

    async def history(self, query: HistoryQuery) -> tuple[list[Version], int | None]:
        return await self._after_flush(lambda c: _history(c, query))

    async def search(self, query: SearchQuery) -> SearchResult:
        return await self._after_flush(lambda c: _search(c, query))

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        return await self._after_flush(lambda c: _read_many(c, keys))

    async def match(self, query: SearchQuery, limit: int) -> list[Version]:
        sql, args = compile_matches(query, limit)
        store = self._store

        def matching(connection: sqlite3.Connection) -> list[Any]:
            # Within the search limit too: the writer waits for it. Interrupted, the
            # unit fails and rolls back as for any error.
            with _interrupted_after(connection, store.search_timeout, store.progress_steps):
                return connection.execute(sql, args).fetchall()

        rows = await self._after_flush(matching)
        return [version_of(row) for row in rows]

    async def write(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        self._pending.append((version, index))

    async def set_index(
        self, resource_type: str, resource_id: str, index: tuple[IndexEntry, ...]
    ) -> None:
        def job(connection: sqlite3.Connection) -> None:
            delete_entries(connection, resource_type, resource_id)
            insert_entries(connection, [(resource_type, resource_id, index)])

        await self._after_flush(job)

    async def put_job(self, job: Job) -> None:
        self._jobs[job.kind, job.key] = job

    async def drop_job(self, kind: str, key: str) -> None:
        self._jobs[kind, key] = None

    def release(self, connection: sqlite3.Connection) -> None:
        """Write what is buffered and end the savepoint: the unit's writes join the
        group's transaction, committed with it."""
        if not self._pending and not self._jobs and not self.begun:
            return
        try:
            self._flush(connection)
            connection.execute("RELEASE unit")
        except BaseException:
            self.rollback(connection)
            raise

    def rollback(self, connection: sqlite3.Connection) -> None:
        """Undo this unit's writes only; the group's transaction goes on."""
        self._pending.clear()
        self._jobs.clear()
        if self.begun:
            self.begun = False
            if connection.in_transaction:  # else SQLite rolled it all back already
                connection.execute("ROLLBACK TO unit")
                connection.execute("RELEASE unit")


def _write(connection: sqlite3.Connection, version: Version) -> None:
    """The version, and the resource pointed at it; its index entries are the caller's."""
    key = (version.resource_type, version.id)
    current = connection.execute(
        "SELECT v.version FROM resources r JOIN versions v ON v.seq = r.seq "
        "WHERE r.type = ? AND r.id = ?",
        key,
    ).fetchone()
    if version.version != (current[0] + 1 if current else 1):
        raise VersionConflict(f"{version.resource_type}/{version.id} has moved on")
    seq = connection.execute(
        "INSERT INTO versions (type, id, version, last_updated, method, body) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (*key, version.version, to_micros(version.last_updated), version.method, version.body),
    ).lastrowid
    connection.execute(
        "INSERT OR REPLACE INTO resources (type, id, seq) VALUES (?, ?, ?)", (*key, seq)
    )
    if current:
        delete_entries(connection, *key)
