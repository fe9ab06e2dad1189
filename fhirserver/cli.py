"""`fhirserver` command line: `serve` runs the server, `import` loads files, `reindex`
rebuilds the search index."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette

from fhirserver.app import create_app, open_store
from fhirserver.bulk.importer import WorkerDied, import_files
from fhirserver.bulk.prepare import Problem
from fhirserver.bulk.sources import input_files
from fhirserver.config import Settings
from fhirserver.errors import Unavailable
from fhirserver.storage.base import Store
from fhirserver.storage.reindex import reindex

STORE_HELP = "SQLite file, or mongodb:// connection string (FHIRSERVER_STORE)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhirserver", description="FHIR R4 (4.0.1) server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="interface to listen on (FHIRSERVER_HOST)")
    serve.add_argument("--port", type=int, help="port; 0 picks a free one (FHIRSERVER_PORT)")
    serve.add_argument("--base-path", help="FHIR base path, '' for root (FHIRSERVER_BASE_PATH)")
    serve.add_argument("--store", help=STORE_HELP)
    serve.add_argument(
        "--public-url", help="public base URL behind a proxy (FHIRSERVER_PUBLIC_URL)"
    )
    serve.add_argument("--log-level", help="uvicorn log level (FHIRSERVER_LOG_LEVEL)")
    reindex_command = commands.add_parser(
        "reindex", help="rebuild the search index after search parameters changed"
    )
    reindex_command.add_argument("--store", help=STORE_HELP)
    import_command = commands.add_parser(
        "import",
        help="load Bundle (.json) and NDJSON (.ndjson, .jsonl) files or directories",
    )
    import_command.add_argument("paths", nargs="+", metavar="PATH")
    import_command.add_argument("--store", help=STORE_HELP)
    import_command.add_argument(
        "--strict", action="store_true", help="stop at the first bad line or entry"
    )
    import_command.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes that parse and validate (default: one per core; 0: none)",
    )
    return parser


class ProgressBar:
    """Share done, resources so far, rate and time left, on stderr: one line redrawn on
    a terminal; otherwise (a log) a new line every few seconds."""

    def __init__(self, label: str, interval: float = 5.0) -> None:
        self.label = label
        self.started = self.shown = time.monotonic()
        self.interval = interval
        self.redraw = sys.stderr.isatty()

    def __call__(self, done: int, total: int, resources: int | None = None) -> None:
        """`resources`: how many so far, when `done` / `total` count something else
        (an import counts bytes read)."""
        moment = time.monotonic()
        if not self.redraw and moment - self.shown < self.interval and done < total:
            return
        self.shown = moment
        elapsed = max(moment - self.started, 1e-9)
        share = done / total if total else 1.0
        left = elapsed / share - elapsed if share else 0.0
        count = done if resources is None else resources
        filled = int(30 * share)
        line = (
            f"{self.label} [{'#' * filled}{'-' * (30 - filled)}] {share:4.0%} {count:,} resources,"
            f" {count / elapsed:,.0f}/s, {left:,.0f}s left"
        )
        sys.stderr.write(f"\r{line} " if self.redraw else f"{line}\n")
        sys.stderr.flush()


async def run_import(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    """The exit status: 0 when everything was written, 1 when anything was not."""

    def report_problem(problem: Problem) -> None:
        sys.stderr.write(f"\nfhirserver import: {problem.where}: {problem.message}\n")

    started = time.monotonic()
    await store.open()
    try:
        report = await import_files(
            store,
            args.paths,
            strict=args.strict,
            workers=args.workers,
            progress=ProgressBar("import"),
            on_problem=report_problem,
        )
    finally:
        await store.close()
    seconds = time.monotonic() - started
    sys.stderr.write("\n" if sys.stderr.isatty() else "")
    print(
        f"fhirserver: imported {report.written} resources from {report.files} files in"
        f" {seconds:.1f}s ({report.written / max(seconds, 1e-9):,.0f}/s);"
        f" {len(report.problems)} problems{' (stopped: --strict)' if report.stopped else ''}",
        flush=True,
    )
    return 1 if report.problems else 0


async def run_reindex(store: Store, settings: Settings) -> int:
    await store.open()
    try:
        done = await reindex(store, ProgressBar("reindex"))
    finally:
        await store.close()
    sys.stderr.write("\n")
    print(f"fhirserver: reindexed {done} resources in {settings.store_label}", flush=True)
    return done


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


async def serve(app: Starlette, settings: Settings) -> None:
    # Open the store once before listening, so that an unreachable database is one
    # line on stderr rather than uvicorn's start-up traceback.
    store: Store = app.state.store
    try:
        await store.open()
    except (Unavailable, OSError) as exc:
        print(f"fhirserver: the store cannot be opened: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    await store.close()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    # uvicorn offers no start-up callback; poll its flag until it listens or gives up.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        print(
            f"fhirserver: FHIR R4 at http://{host}:{port}{settings.base_path}"
            f" (store {settings.store_label})",
            flush=True,
        )
    await task
    if not server.started:
        sys.exit(1)


def _store_of(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Settings, Store]:
    """The settings and (unopened) store a command's --store and the environment name."""
    try:
        settings = Settings.from_env().with_overrides(store=args.store)
        return settings, open_store(settings)
    except ValueError as exc:
        parser.error(str(exc))


def main(argv: Sequence[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = Settings.from_env().with_overrides(
                host=args.host,
                port=args.port,
                base_path=args.base_path,
                store=args.store,
                public_url=args.public_url,
                log_level=args.log_level,
            )
            app = create_app(settings)
        except ValueError as exc:
            parser.error(str(exc))
        asyncio.run(serve(app, settings))
    elif args.command == "reindex":
        settings, store = _store_of(args, parser)
        asyncio.run(run_reindex(store, settings))
    elif args.command == "import":
        settings, store = _store_of(args, parser)
        try:
            # Before the store is opened, so that a typo creates no empty store file.
            input_files(args.paths)
            sys.exit(asyncio.run(run_import(store, settings, args)))
        except FileNotFoundError as exc:
            parser.error(str(exc))
        except WorkerDied as exc:
            sys.exit(f"fhirserver import: {exc}")


if __name__ == "__main__":
    main()
