"""`fhirserver serve`: uvicorn on a socket bound before the app is built, in this
process or in N worker processes on the same port (`--workers`, FHIRSERVER_WORKERS).

Worker processes are spawned, not forked (the parent's threads are not copied into
them), each builds its own app and store and listens on a socket of its own bound to
the one port (SO_REUSEPORT), so that the kernel spreads new connections over them. They
share nothing but the store, which is what makes them safe (DESIGN.md "Scale-out"):
SQLite lets one writer at a time in (BEGIN IMMEDIATE, across processes) beside WAL
readers; jobs and subscription deliveries are claimed under leases; websocket sessions
read notifications from the store's event log. What stays per process is said in the
README ("Worker processes"): rate limits and connection caps count per process.

The parent supervises: it prints the start-up line once every worker listens, replaces a
worker that dies, and on SIGINT / SIGTERM stops them all and exits 0. A worker whose
parent is gone (killed with SIGKILL, which cannot be caught) stops by itself, so the
port is never left served by orphans.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.connections import ConnectionGuard, GuardedWebSocket, guarded_protocol
from fhirserver.cpu import tune_for_serving
from fhirserver.errors import Unavailable
from fhirserver.interactions.ig_load import stored_registry
from fhirserver.rest.subscription_ws import MAX_MESSAGE_BYTES
from fhirserver.storage.base import Store
from fhirserver.storage.reindex import rebuild_outdated

T = TypeVar("T")


def _server_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop (libuv), as uvicorn itself picks when uvloop is installed
    (`loop="auto"`): on the bench it serves about 11% more creates a second than
    asyncio's own loop, the loop's share of each request (socket reads and writes, the
    writer thread's answers) being that much cheaper. asyncio's loop where uvloop does
    not install (Windows)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on the platforms the project runs on
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_serving(main: Coroutine[Any, Any, T]) -> T:
    """`main` to completion on the server's event loop (`_server_loop`)."""
    with asyncio.Runner(loop_factory=_server_loop) as runner:
        return runner.run(main)


# Seconds a worker may take from spawn to listening (imports and the app's start-up).
START_SECONDS = 60.0
# Seconds a worker has to finish its requests after SIGTERM before it is killed.
STOP_SECONDS = 30.0
# The longest wait before starting a worker again after a replacement failed to start.
MAX_RETRY_SECONDS = 60.0
# Seconds between two looks at the workers (and, in a worker, at its parent).
WATCH_SECONDS = 0.5


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGINT / SIGTERM end it with exit status 0.

    uvicorn re-raises a caught signal after its graceful shutdown, so the process
    would die of it (status 143, or a KeyboardInterrupt traceback) after shutting
    down cleanly.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def listen(settings: Settings) -> tuple[socket.socket, Settings]:
    """The listening socket, bound before the app is built, and the settings with the
    port it bound: with port 0 the system picks one, and the URLs the app builds from
    its settings rather than a request (notification fullUrls, telehealth join links,
    SMART endpoints) must name that port, not 0."""
    host = settings.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Protocol TCP named, as uvicorn's own binding has it: asyncio sets TCP_NODELAY on
    # the accepted connections only then; without it Nagle holds small answers ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, settings.port))
    except OSError:
        sock.close()
        raise
    return sock, settings.with_overrides(port=sock.getsockname()[1])


def server_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves the app. A websocket client's message is capped at the
    subscription socket's largest command (uvicorn reads no frame beyond it). Forwarded
    headers are the app's to believe or not (rest/proxies.py): uvicorn's own handling
    would trust them from 127.0.0.1, whoever the client on loopback is. Connections get
    a header deadline and a cap per client address."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        ws_max_size=MAX_MESSAGE_BYTES,
        proxy_headers=False,
        timeout_keep_alive=settings.keep_alive_seconds,
        ws=GuardedWebSocket,
        # Header deadline and connections per client (fhirserver/connections.py).
        http=guarded_protocol(
            ConnectionGuard(
                header_seconds=settings.header_timeout_seconds,
                max_per_client=settings.max_connections_per_client,
                exempt=settings.proxy_networks,
            )
        ),
    )


def _started_line(settings: Settings) -> str:
    host = settings.host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    return (
        f"fhirserver: FHIR R4 at http://{shown}:{settings.port}{settings.base_path}"
        f" (store {settings.store_label})"
    )


async def prepare_store(store: Store) -> bool:
    """Open the store once before serving: an unreachable database is one line on
    stderr rather than uvicorn's start-up traceback (False), and index tables an upgrade
    replaced are rebuilt here, once, before any process serves (the processes that open
    the store after this one find the tables current and would not know)."""
    try:
        await store.open()
    except (Unavailable, OSError) as exc:
        print(f"fhirserver: the store cannot be opened: {exc}", file=sys.stderr, flush=True)
        return False
    try:
        if store.index_outdated:
            print(
                "fhirserver: the search index tables were upgraded; rebuilding them",
                file=sys.stderr,
                flush=True,
            )
            await rebuild_outdated(store, known=await stored_registry(store))
    finally:
        await store.close()
    return True


async def _run_server(
    app: Starlette,
    settings: Settings,
    sock: socket.socket,
    on_started: Callable[[], None],
    parent: int | None = None,
) -> bool:
    """Serve until a signal (or, in a worker, its parent's death); whether it started.
    `on_started` is called once it listens."""
    tune_for_serving()
    server = _Server(server_config(app, settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no start-up callback; poll its flag until it listens or gives up.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if server.started:
        on_started()
    watch = None if parent is None else asyncio.create_task(_exit_with_parent(server, parent))
    await task
    if watch is not None:
        watch.cancel()
    return server.started


async def _exit_with_parent(server: uvicorn.Server, parent: int) -> None:
    while not server.should_exit:
        await asyncio.sleep(WATCH_SECONDS)
        # An orphan is adopted by another process: the parent died without stopping it.
        if os.getppid() != parent:
            server.should_exit = True


def worker_sockets(sock: socket.socket, count: int) -> list[socket.socket]:
    """A socket per worker on the address `sock` is bound to (which it replaces).

    On one shared listening socket, the worker that wakes first accepts every
    connection waiting (asyncio takes up to a backlog's worth in one go), so a client
    that opens its pool of keep-alive connections at once (a load balancer, a bulk
    loader) gets them all served by one worker while the others idle. With a socket
    each, bound with SO_REUSEPORT, the kernel hashes each new connection to one of them
    (nginx's `reuseport`, gunicorn's `--reuse-port`). A dead worker's socket stays open
    in this process, so connections hashed to it wait for its replacement.

    `sock` was bound without SO_REUSEPORT, so it failed if the port was in use; it is
    closed before the group binds the same address. Where SO_REUSEPORT does not exist,
    the workers share `sock`."""
    if count == 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [sock] * count
    address = sock.getsockname()
    sock.close()
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            # As listen(): TCP named, so that asyncio sets TCP_NODELAY on connections.
            member = socket.socket(sock.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            group.append(member)
            member.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            member.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            member.bind(address)
    except OSError:
        for member in group:
            member.close()
        raise
    return group


def serve(app: Starlette, settings: Settings, sock: socket.socket) -> int:
    """`fhirserver serve` of `app` (built by the caller from `settings`, so that bad
    settings are said at once, also before worker processes start); the exit status."""
    if not asyncio.run(prepare_store(app.state.store)):
        return 1
    if settings.workers > 1:
        return _Supervisor(settings, sock).run()

    def announce() -> None:
        print(_started_line(settings), flush=True)

    return 0 if run_serving(_run_server(app, settings, sock, announce)) else 1


def _worker(settings: Settings, sock: socket.socket, ready: Connection, parent: int) -> None:
    """A worker process: its own app and store, on its socket of the port."""
    # Ctrl-C at a terminal reaches every process of the group; the parent stops the
    # workers itself (SIGTERM), and uvicorn handles signals once it serves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app = create_app(settings)

    def report() -> None:
        ready.send(True)
        ready.close()

    started = run_serving(_run_server(app, settings, sock, report, parent))
    sys.exit(0 if started else 1)


class _Supervisor:
    """Starts `settings.workers` worker processes on `sock` and keeps them running."""

    def __init__(self, settings: Settings, sock: socket.socket) -> None:
        self.settings = settings
        self.sock = sock
        self.sockets: list[socket.socket] = []
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[BaseProcess] = []
        self.stopping = threading.Event()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        try:
            try:
                self.sockets = worker_sockets(self.sock, self.settings.workers)
            except OSError as exc:
                print(f"fhirserver: cannot listen for the workers: {exc}", file=sys.stderr)
                return 1
            for _ in range(self.settings.workers):
                if not self._start():
                    return 0 if self.stopping.is_set() else 1
            print(_started_line(self.settings), flush=True)
            return 0 if self._watch() else 1
        finally:
            self._stop_all()

    def _start(self, slot: int | None = None) -> bool:
        """Spawn a worker (in `slot`, replacing a dead one) and wait until it listens."""
        receive, send = self.context.Pipe(duplex=False)
        sock = self.sockets[len(self.workers) if slot is None else slot]
        worker = self.context.Process(
            target=_worker,
            args=(self.settings, sock, send, os.getpid()),
            name="fhirserver-worker",
        )
        worker.start()
        send.close()
        if slot is None:
            self.workers.append(worker)
        else:
            self.workers[slot] = worker
        deadline = time.monotonic() + START_SECONDS
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if wait([receive, worker.sentinel], timeout=WATCH_SECONDS):
                try:
                    return bool(receive.recv())
                except EOFError:
                    break  # it died before it listened
        if self.stopping.is_set():
            return False
        print(
            f"fhirserver: a worker process did not start (exit status {worker.exitcode})",
            file=sys.stderr,
            flush=True,
        )
        return False

    def _watch(self) -> bool:
        """Replace workers that die, until a signal asks to stop (True). A replacement
        that does not start is tried again later, waiting twice as long each time
        (up to a minute), while the others serve; when none is left, False."""
        retry_at: dict[int, float] = {}
        delay: dict[int, float] = {}
        while not self.stopping.is_set():
            wait([worker.sentinel for worker in self.workers], timeout=WATCH_SECONDS)
            for slot, worker in enumerate(self.workers):
                if self.stopping.is_set() or worker.exitcode is None:
                    continue
                if time.monotonic() < retry_at.get(slot, 0.0):
                    continue
                print(
                    f"fhirserver: worker process {worker.pid} ended (exit status"
                    f" {worker.exitcode}); starting another",
                    file=sys.stderr,
                    flush=True,
                )
                if self._start(slot):
                    delay.pop(slot, None)
                    continue
                delay[slot] = min(2 * delay.get(slot, 0.5), MAX_RETRY_SECONDS)
                retry_at[slot] = time.monotonic() + delay[slot]
                if all(worker.exitcode is not None for worker in self.workers):
                    return self.stopping.is_set()
        return True

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.exitcode is None and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.exitcode is None:
                worker.kill()
                worker.join()
