"""SqliteStore: the Store protocol over one SQLite file.

Writes go through one connection on one thread, serialised by an asyncio lock and
by SQLite's own write lock (BEGIN IMMEDIATE), so a read-check-write inside a unit of
work cannot race another writer, in this process or another. Reads use a small pool
of connections on their own threads; WAL lets them run beside the writer.

Group commit: units of work the writer runs one after another share one transaction.
Each runs inside its own savepoint, so a unit that fails rolls back alone and the others
keep their writes. The writer thread commits the transaction when it has nothing more
queued and no unit is open (or the group is full), and every unit of the group returns
only after that commit, so nothing is acknowledged before it is durable. One commit
writes each page the group touched to the WAL once instead of once per unit.

A unit's last trip to the writer (its buffered writes and the end of its savepoint) is
sent, not awaited, before the next unit may start: the writer runs jobs in the order
sent, so the next unit still sees those writes, while its own work on the event loop
(stamping, index entries) overlaps with the writer's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
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
from fhirserver.search.query import IndexEntry, Predicate, SearchQuery
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
from fhirserver.storage.sqlite.jobs import any_claimable, claim, finish, retry, write_jobs
from fhirserver.storage.sqlite.schema import (
    READER_CACHE_KIB,
    VERSION_COLUMNS,
    WRITER_CACHE_KIB,
    connect,
    create_schema,
    index_rebuilt,
    version_of,
)
from fhirserver.storage.sqlite.search import (
    compile_count,
    compile_index_rows,
    compile_matches,
    compile_page,
)

T = TypeVar("T")
# Keys looked up per statement by read_many: well inside SQLite's 32,766 variables.
_KEYS_PER_QUERY = 500
# SQLite virtual-machine steps between two looks at a search's deadline: ~10 ms of
# work. Each look takes the GIL, which under load can mean a wait; 100 looks a second
# cost nothing noticeable.
PROGRESS_STEPS = 100_000
# At this many index rows the clause a search in id order starts from is dense enough to
# walk the type instead (_dense). Walking costs about 21 * N / rows probes for N
# resources of the type, starting from the index about 3 us a row: even for the largest
# type at 100x (1.2 million Observations) the walk at 2,000 rows is no slower than twice
# the index's way, and it is far faster for denser clauses.
DENSE_INDEX_ROWS = 2000
# Threads for reads by id, apart from the searches' threads: a read never queues
# behind slow searches (issue 20).
LOOKUP_THREADS = 2
# Units of work one commit takes at most: under a steady queue of writers the first of a
# group still gets its answer after a bounded wait.
MAX_GROUP = 32
# Seconds from one checkpoint beside the writer to the next, at least (`_checkpoint_soon`).
CHECKPOINT_SECONDS = 1.0
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


def _search(connection: sqlite3.Connection, query: SearchQuery, dense_rows: int) -> SearchResult:
    request = PageRequest.of(query)
    with _snapshot(connection):
        compiled = compile_page(
            query,
            request.limit,
            request.after,
            request.backwards,
            functools.partial(_dense, connection, dense_rows),
        )
        rows = connection.execute(compiled.sql, compiled.args).fetchall()
        page = request.page(rows, lambda row: list(row[: compiled.keys]))
        matches = [version_of(row[compiled.keys :]) for row in page.rows]
        total = None
        if request.counts_total:
            total = connection.execute(*compile_count(query)).fetchone()[0]
        included = find_includes(connection, query.includes, matches, query.max_included)
    return page.result(matches, included.resources, total, included.complete)


def _dense(
    connection: sqlite3.Connection, rows: int, predicate: Predicate, resource_type: str
) -> bool:
    """Whether a selective predicate has at least `rows` index rows. Then a search of it
    alone, in id order, walks its type's resources in that order and finds a page among
    the first few thousand, where starting from the index rows reads and sorts every
    match (Compiler.where; at 100x the Synthea set, `Condition?code=` of a code 10,000
    Conditions have took 36 ms that way, about 2 by the walk); and a `_has` tests each
    referring resource rather than list every match."""
    counting = compile_index_rows(predicate, resource_type, rows)
    return bool(connection.execute(*counting).fetchone()[0] >= rows)


class SqliteStore:
    # One writer at a time (BEGIN IMMEDIATE): units never contend.
    concurrent_units = False

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
        # Index rows from which a search in id order walks its type instead (_dense).
        self.dense_index_rows = DENSE_INDEX_ROWS
        self._writer_cache_kib, self._reader_cache_kib = writer_cache_kib, reader_cache_kib
        self._reader_count = readers
        self._connections: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = asyncio.Lock()
        # Jobs sent to the writer thread and not yet started.
        self._queued = 0
        self._queued_lock = threading.Lock()
        # The writer thread's own: the transaction units of work share (group commit)
        # while one is open, and whether a unit is open in it (begun, not yet ended).
        self._group: _WriteGroup | None = None
        self._unit_open = False
        # Whether a checkpoint is running beside the writer, and when the last began.
        self._checkpointing = False
        self._checkpoint_began = float("-inf")
        self.index_outdated = False

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(
            self._reader_count, thread_name_prefix="sqlite-reader"
        )
        self._lookup_pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="sqlite-lookup")
        self._checkpoint_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(
            self._writer_pool, lambda: self._connect(self._writer_cache_kib)
        )
        # Set when an upgraded file's index must be rebuilt (the app runs a reindex).
        self.index_outdated = await self._on_writer(create_schema)

    async def index_rebuilt(self) -> None:
        await self._between_units(index_rebuilt)

    async def close(self) -> None:
        async with self._lock:
            await self._on_writer(self._commit_group)  # its units are waiting to be told
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        # Keeps planner statistics current (sqlite.org/lang_analyze.html#pragopt).
        self._writer_pool.submit(lambda: self._writer.execute("PRAGMA optimize")).result()
        self._writer_pool.shutdown(wait=True)
        self._checkpoint_pool.shutdown(wait=True)
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
        """Queue `job` on the writer thread; jobs run in the order sent. After each, an
        open group is committed if the writer has nothing more to do."""

        def run() -> T:
            with self._queued_lock:
                self._queued -= 1
            try:
                return job(self._writer)
            finally:
                self._commit_if_idle(self._writer)

        with self._queued_lock:
            self._queued += 1
        try:
            return asyncio.get_running_loop().run_in_executor(self._writer_pool, run)
        except BaseException:
            with self._queued_lock:
                self._queued -= 1
            raise

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
        return await self._timed(lambda c: _search(c, query, self.dense_index_rows))

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

    async def settled_seq(self) -> int:
        # Committed seqs have no gaps below them (changes()): the highest is the bound.
        seq: int = await self._on_reader(
            lambda c: c.execute("SELECT coalesce(max(seq), 0) FROM versions").fetchone()[0]
        )
        return seq

    async def claim_job(
        self, kinds: Sequence[str], owner: str, now: datetime, lease: timedelta
    ) -> Job | None:
        # The job runner looks after every write, and most looks find nothing: made on a
        # reader first, they neither take the write lock nor wait for another process's,
        # nor end an open group. A job found here is claimed on the writer (which may
        # find it gone: another worker's).
        if not await self._on_lookup(lambda c: any_claimable(c, kinds, now)):
            return None
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

        def after_commit(connection: sqlite3.Connection) -> T:
            self._commit_group(connection)
            return statement(connection)

        async with self._lock:
            return await self._on_writer(after_commit)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        async with self._lock:
            unit = _SqliteUnitOfWork(self)
            try:
                yield unit
            except BaseException:
                await self._on_writer(unit.rollback)
                raise
            # Sent, not awaited (see the module's docstring).
            released = self._send(unit.release)
        try:
            # This unit's own error (a version conflict, say), its writes undone.
            await asyncio.shield(released)
        except sqlite3.OperationalError as exc:
            raise _busy_or(exc) from None
        if unit.group is not None:
            # Acknowledged only once the group's transaction is committed; a failed
            # commit fails every unit of the group.
            await asyncio.shield(asyncio.wrap_future(unit.group.committed))

    # The writer thread's side of group commit.

    def _join_group(self, connection: sqlite3.Connection) -> _WriteGroup:
        """The open group, begun if none is, for a unit that starts to write or read."""
        group = self._group
        if group is None:
            _begin_immediate(connection, self.busy_timeout_ms / 1000)
            group = self._group = _WriteGroup()
        elif not connection.in_transaction:
            # SQLite rolled the whole transaction back (SQLITE_FULL, IOERR, NOMEM): the
            # units before lost their writes, and a savepoint now would commit on its
            # own. The group fails (its COMMIT finds no transaction), and so does this.
            raise sqlite3.OperationalError("the group's transaction was rolled back")
        group.units += 1
        self._unit_open = True
        return group

    def _commit_if_idle(self, connection: sqlite3.Connection) -> None:
        group = self._group
        if group is None or self._unit_open:
            return
        with self._queued_lock:
            idle = self._queued == 0
        if idle or group.units >= MAX_GROUP:
            self._commit_group(connection)

    def _commit_group(self, connection: sqlite3.Connection) -> None:
        """Commit the open group, if any, and tell its units the outcome."""
        group, self._group = self._group, None
        if group is None:
            return
        try:
            group.commit(connection)
        except Exception as exc:
            error = _busy_or(exc) if isinstance(exc, sqlite3.OperationalError) else exc
            group.committed.set_exception(error)
        else:
            group.committed.set_result(None)
            self._checkpoint_soon()

    def _checkpoint_soon(self) -> None:
        """After a commit, on the writer thread: copy the WAL's pages into the database
        file on a thread of its own (a PASSIVE checkpoint, which never waits for the
        writer or the readers), at most once every CHECKPOINT_SECONDS. The writer's own
        checkpoint (wal_autocheckpoint, which also restarts the WAL) then finds the
        pages copied and synced already, so the commit that runs it no longer waits on
        the disk for most of them: `fhirserver import` of the Synthea set went from about
        2,000 to 2,070 resources/s. Durability is unchanged: a checkpoint copies only
        committed pages, and syncs them (sqlite.org/wal.html#ckpt)."""
        began = time.monotonic()
        if self._checkpointing or began - self._checkpoint_began < CHECKPOINT_SECONDS:
            return
        self._checkpointing, self._checkpoint_began = True, began
        try:
            self._checkpoint_pool.submit(self._checkpoint)
        except RuntimeError:  # the interpreter is exiting: the commit stands all the same
            self._checkpointing = False

    def _checkpoint(self) -> None:
        try:
            self._reader().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # the file is closing, or busy: the writer's own checkpoint still runs
        finally:
            self._checkpointing = False


def _begin_immediate(connection: sqlite3.Connection, timeout: float) -> None:
    """BEGIN IMMEDIATE, waiting up to `timeout` seconds for another process's write
    lock. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms and so on between
    tries, so a writer process that found the lock taken kept waiting long after it
    was free, and two `--workers` wrote little more than one. Here the tries start 50
    microseconds apart and are at most a millisecond apart."""
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + timeout
        pause = 0.00005
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 0.001)
    finally:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _busy_or(error: sqlite3.OperationalError) -> Exception:
    """The write lock held by another process past busy_timeout is 503."""
    if _is_busy(error):
        return Unavailable(
            "The store is busy with another writer; try again", headers={"Retry-After": "1"}
        )
    return error


class _WriteGroup:
    """The write transaction units of work share, and the future they wait on."""

    def __init__(self) -> None:
        self.committed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.units = 0

    def commit(self, connection: sqlite3.Connection) -> None:
        try:
            connection.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open; never keep the writer in it.
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


class _SqliteUnitOfWork:
    """Buffers writes so that a plain create costs one trip to the writer thread."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        # The group the unit joined when it began (on the writer thread).
        self.group: _WriteGroup | None = None
        # Whether the unit has opened its savepoint (in the group's transaction).
        self.begun = False
        self._pending: list[tuple[Version, tuple[IndexEntry, ...]]] = []
        # Jobs to put, or to drop (None), by (kind, key): the last call for a key wins.
        self._jobs: dict[tuple[str, str], Job | None] = {}

    def _begin(self, connection: sqlite3.Connection) -> None:
        if not self.begun:
            self.group = self._store._join_group(connection)
            self.begun = True
            connection.execute("SAVEPOINT unit")

    def _flush(self, connection: sqlite3.Connection) -> None:
        self._begin(connection)
        pending, self._pending = self._pending, []
        # The index rows of each resource's last write, inserted together at the end
        # (an earlier write's seq is no longer current by then).
        indexes: dict[tuple[str, str], tuple[int, str, tuple[IndexEntry, ...]]] = {}
        for version, index in pending:
            seq = _write(connection, version)
            key = (version.resource_type, version.id)
            indexes.pop(key, None)
            if version.body is not None:
                indexes[key] = (seq, version.resource_type, index)
        insert_entries(connection, indexes.values())
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
        rows = self._store.dense_index_rows
        return await self._after_flush(lambda c: _search(c, query, rows))

    async def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Version]:
        if not keys:
            return {}
        return await self._after_flush(lambda c: _read_many(c, keys))

    async def match(self, query: SearchQuery, limit: int, decides: bool = True) -> list[Version]:
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

    async def set_index(self, version: Version, index: tuple[IndexEntry, ...]) -> None:
        key = (version.resource_type, version.id)

        def job(connection: sqlite3.Connection) -> None:
            current = connection.execute(
                "SELECT v.version, v.seq FROM resources r JOIN versions v ON v.seq = r.seq"
                " WHERE r.type = ? AND r.id = ?",
                key,
            ).fetchone()
            if current is None or current[0] != version.version:
                return
            delete_entries(connection, current[1])
            insert_entries(connection, [(current[1], version.resource_type, index)])

        await self._after_flush(job)

    async def put_job(self, job: Job) -> None:
        self._jobs[job.kind, job.key] = job

    async def drop_job(self, kind: str, key: str) -> None:
        self._jobs[kind, key] = None

    @property
    def writes(self) -> bool:
        """Whether the unit wrote or will write when released (so joins its group)."""
        return self.begun or bool(self._pending) or bool(self._jobs)

    def release(self, connection: sqlite3.Connection) -> None:
        """Write what is buffered and end the savepoint: the unit's writes join the
        group's transaction, committed with it."""
        if not self.writes:
            return
        try:
            self._flush(connection)
            connection.execute("RELEASE unit")
        except BaseException:
            self.rollback(connection)
            raise
        self._store._unit_open = False

    def rollback(self, connection: sqlite3.Connection) -> None:
        """Undo this unit's writes only; the group's transaction goes on."""
        self._pending.clear()
        self._jobs.clear()
        if self.begun:
            self.begun = self._store._unit_open = False
            if connection.in_transaction:  # else SQLite rolled it all back already
                connection.execute("ROLLBACK TO unit")
                connection.execute("RELEASE unit")


def _write(connection: sqlite3.Connection, version: Version) -> int:
    """The version, and the resource pointed at it; its seq. Its index entries are the
    caller's to insert; the replaced version's are deleted here."""
    key = (version.resource_type, version.id)
    current = connection.execute(
        "SELECT v.version, v.seq FROM resources r JOIN versions v ON v.seq = r.seq "
        "WHERE r.type = ? AND r.id = ?",
        key,
    ).fetchone()
    if version.version != (current[0] + 1 if current else 1):
        raise VersionConflict(f"{version.resource_type}/{version.id} has moved on")
    seq: int = connection.execute(
        "INSERT INTO versions (type, id, version, last_updated, method, body) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (*key, version.version, to_micros(version.last_updated), version.method, version.body),
    ).lastrowid  # type: ignore[assignment]
    connection.execute(
        "INSERT OR REPLACE INTO resources (type, id, seq) VALUES (?, ?, ?)", (*key, seq)
    )
    if current:
        delete_entries(connection, current[1])
    return seq
