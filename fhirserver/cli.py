"""`fhirserver` command line: `serve` runs the server, `import` loads files, `reindex`
rebuilds the search index, `ig load` stores an Implementation Guide package's profiles,
terminology and search parameters, `clients` and `users` administer the built-in SMART
authorization server (against the configured store; the server may be running)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhirserver.auth import admin, registry
from fhirserver.auth.urls import auth_urls
from fhirserver.bulk.export_local import MANIFEST, ExportFailed, export_to_folder
from fhirserver.bulk.export_request import GROUP, PATIENT, SYSTEM
from fhirserver.bulk.importer import WorkerDied, import_files
from fhirserver.bulk.prepare import Problem
from fhirserver.bulk.sources import input_files
from fhirserver.clock import system_clock
from fhirserver.config import Settings
from fhirserver.cpu import tune_collector
from fhirserver.errors import BadRequest, FHIRError, NotSupported
from fhirserver.interactions.ig_load import load_package, stored_registry
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.package import Package, PackageError, read_package
from fhirserver.progress import ProgressDisplay
from fhirserver.storage.base import Store
from fhirserver.storage.configured import open_store
from fhirserver.storage.reindex import reindex

if TYPE_CHECKING:
    from fhirserver.storage.mongo import MongoStore

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
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port and the store (FHIRSERVER_WORKERS; default 1)",
    )
    mongo = commands.add_parser("mongo", help="MongoDB deployments").add_subparsers(
        dest="action", required=True
    )
    mongo.add_parser(
        "check",
        help="connect, create or verify the indexes, and report what was found",
    ).add_argument("--store", help=STORE_HELP)
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
    export_command = commands.add_parser(
        "export", help="bulk-export the store into a folder as NDJSON files and a manifest"
    )
    export_command.add_argument("out_dir", metavar="OUT_DIR")
    export_command.add_argument("--store", help=STORE_HELP)
    export_command.add_argument(
        "--type", action="append", default=[], help="a resource type to export (repeatable)"
    )
    export_command.add_argument("--since", help="only resources changed after this instant")
    export_command.add_argument(
        "--type-filter", action="append", default=[], help="'Type?search' (repeatable, OR'ed)"
    )
    whose = export_command.add_mutually_exclusive_group()
    whose.add_argument(
        "--patient", action="append", default=[], help="only this patient's compartment"
    )
    whose.add_argument("--group", help="only the compartments of this Group's members")
    ig_command = commands.add_parser(
        "ig", help="Implementation Guide packages: load one into the store"
    ).add_subparsers(dest="action", required=True)
    ig_load = ig_command.add_parser(
        "load",
        help="store a FHIR package's CodeSystems, ValueSets, StructureDefinitions and"
        " SearchParameters (again: updates them)",
    )
    ig_load.add_argument("package", metavar="PACKAGE.tgz")
    ig_load.add_argument("--store", help=STORE_HELP)
    _auth_parsers(commands)
    return parser


def _auth_parsers(commands: Any) -> None:
    clients = commands.add_parser(
        "clients", help="register SMART clients of the built-in authorization server"
    ).add_subparsers(dest="action", required=True)
    add = clients.add_parser("add", help="register a client (prints what it needs)")
    add.add_argument("client_id", metavar="CLIENT_ID")
    kind = add.add_mutually_exclusive_group(required=True)
    kind.add_argument("--jwks", metavar="FILE", help="its public JWK Set (private_key_jwt)")
    kind.add_argument("--jwks-url", metavar="URL", help="where it publishes its JWK Set")
    kind.add_argument(
        "--secret", action="store_true", help="a confidential client with a generated secret"
    )
    kind.add_argument("--public", action="store_true", help="a public app (PKCE, no secret)")
    add.add_argument(
        "--redirect-uri", action="append", default=[], metavar="URI", help="repeatable"
    )
    add.add_argument("--scope", required=True, help='what it may be granted, e.g. "system/*.rs"')
    add.add_argument("--store", help=STORE_HELP)
    for action in ("list", "remove"):
        command = clients.add_parser(action, help=f"{action} registered clients")
        if action == "remove":
            command.add_argument("client_id", metavar="CLIENT_ID")
        command.add_argument("--store", help=STORE_HELP)
    users = commands.add_parser(
        "users", help="users who log in at the built-in authorization server"
    ).add_subparsers(dest="action", required=True)
    add_user = users.add_parser("add", help="add a user linked to a FHIR resource")
    add_user.add_argument("username", metavar="USERNAME")
    add_user.add_argument(
        "--fhir-user", required=True, help="Patient/ID, Practitioner/ID or RelatedPerson/ID"
    )
    add_user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add_user.add_argument("--store", help=STORE_HELP)
    for action in ("list", "remove"):
        command = users.add_parser(action, help=f"{action} users")
        if action == "remove":
            command.add_argument("username", metavar="USERNAME")
        command.add_argument("--store", help=STORE_HELP)


async def run_clients(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    """`fhirserver clients add|list|remove`; the exit status."""
    await store.open()
    try:
        now = system_clock()
        if args.action == "add":
            added = await admin.add_client(
                store,
                args.client_id,
                scopes=args.scope,
                now=now,
                public=args.public,
                secret=args.secret,
                jwks=args.jwks_document,
                jwks_url=args.jwks_url,
                redirect_uris=tuple(args.redirect_uri),
            )
            _print_registered(added, settings)
        elif args.action == "list":
            for client in await registry.list_clients(store, now):
                uris = " ".join(client.redirect_uris) or "-"
                print(f"{client.client_id}\t{client.kind}\t{client.scopes}\t{uris}")
        elif not await registry.remove_client(store, args.client_id):
            print(f"fhirserver clients: no client {args.client_id!r}", file=sys.stderr)
            return 1
    finally:
        await store.close()
    return 0


def _print_registered(added: admin.Registered, settings: Settings) -> None:
    client, urls = added.client, auth_urls(settings)
    print(f"client_id: {client.client_id}")
    print(f"kind: {client.kind}")
    print(f"scope: {client.scopes}")
    print(f"token_endpoint: {urls.token}")
    if client.redirect_uris:
        print(f"authorization_endpoint: {urls.authorize}")
    print(f"smart_configuration: {urls.smart_configuration}")
    if client.kind == "symmetric":
        print("token_endpoint_auth_method: client_secret_basic (or client_secret_post)")
        print(f"client_secret: {added.secret}")
        print("The secret is shown this once; only its hash is stored.", file=sys.stderr)
    elif client.kind == "asymmetric":
        print("token_endpoint_auth_method: private_key_jwt (RS384 or ES384)")


async def run_users(
    store: Store, args: argparse.Namespace, read_password: Callable[[], str]
) -> int:
    """`fhirserver users add|list|remove`; the exit status."""
    await store.open()
    try:
        now = system_clock()
        if args.action == "add":
            user = await admin.add_user(
                store, args.username, fhir_user=args.fhir_user, password=read_password(), now=now
            )
            print(f"user {user.username} added as {user.fhir_user}")
        elif args.action == "list":
            for user in await registry.list_users(store, now):
                print(f"{user.username}\t{user.fhir_user}")
        elif not await registry.remove_user(store, args.username):
            print(f"fhirserver users: no user {args.username!r}", file=sys.stderr)
            return 1
    finally:
        await store.close()
    return 0


def password_reader(from_stdin: bool) -> Callable[[], str]:
    """The password from standard input (first line), or typed twice at a prompt."""

    def read() -> str:
        if from_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise admin.AdminError("The passwords differ")
        return first

    return read


async def run_import(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    """The exit status: 0 when everything was written, 1 when anything was not."""

    def report_problem(problem: Problem) -> None:
        sys.stderr.write(f"\nfhirserver import: {problem.where}: {problem.message}\n")

    started = time.monotonic()
    await store.open()
    tune_collector()
    try:
        with ProgressDisplay("import") as progress:
            report = await import_files(
                store,
                args.paths,
                strict=args.strict,
                workers=args.workers,
                progress=progress,
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


async def run_export(
    store: Store, settings: Settings, args: argparse.Namespace, parser: argparse.ArgumentParser
) -> int:
    """The exit status: 0 when the export finished, 1 when it failed; bad arguments
    are a usage error (2)."""
    level = GROUP if args.group else PATIENT if args.patient else SYSTEM
    params = [("_type", name) for name in args.type]
    params += [("_since", args.since)] if args.since else []
    params += [("_typeFilter", text) for text in args.type_filter]
    params += [("patient", f"Patient/{patient}") for patient in args.patient]
    started = time.monotonic()
    await store.open()
    try:
        with ProgressDisplay("export") as progress:
            answer = await export_to_folder(
                store,
                Path(args.out_dir),
                level,
                params,
                system_clock,
                progress,
                group_id=args.group,
                max_file_bytes=settings.export_max_file_bytes,
                chunk=settings.export_chunk,
            )
    except (NotSupported, BadRequest) as exc:
        parser.error(str(exc))
    except (FHIRError, ExportFailed, OSError) as exc:
        print(f"fhirserver export: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await store.close()
    written = sum(item["count"] for item in answer["output"])
    seconds = time.monotonic() - started
    print(
        f"fhirserver: exported {written} resources into {args.out_dir} in {seconds:.1f}s"
        f" ({written / max(seconds, 1e-9):,.0f}/s); manifest {MANIFEST}",
        flush=True,
    )
    return 0


async def run_ig_load(store: Store, settings: Settings, package: Package) -> int:
    """Writes the package's conformance resources as the server (README "Validation and
    profiles"); 1 when any was refused."""
    await store.open()
    try:
        loaded = await load_package(store, WriteContext().as_server(), package)
    finally:
        await store.close()
    for where, why in loaded.refused:
        print(f"fhirserver ig load: {where} refused: {why}", file=sys.stderr, flush=True)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(loaded.written.items()))
    print(
        f"fhirserver: loaded {package.name} {package.version} into {settings.store_label}:"
        f" {counts or 'nothing'}; its search parameters apply from the server's next start,"
        " to resources stored before it after `fhirserver reindex`",
        flush=True,
    )
    return 1 if loaded.refused else 0


async def run_mongo_check(store: MongoStore) -> int:
    """Print what `storage/mongo/check.py` finds; 0 when servers can use the store."""
    from fhirserver.storage.mongo.check import check

    try:
        await store.open()
    except FHIRError as exc:
        print(f"fhirserver mongo check: {exc.issues[0].diagnostics}", file=sys.stderr)
        return 1
    try:
        findings = await check(store)
    except Exception as exc:  # the deployment's fault, said in one line: no traceback
        print(f"fhirserver mongo check: {store.scrubbed(exc)}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    for finding in findings:
        print(f"{'ok  ' if finding.ok else 'FAIL'} {finding.what}: {finding.detail}", flush=True)
    return 0 if all(finding.ok for finding in findings) else 1


async def run_reindex(store: Store, settings: Settings) -> int:
    await store.open()
    try:
        # With the SearchParameters stored by `ig load` (README "Validation and profiles").
        known = await stored_registry(store)
        with ProgressDisplay("reindex") as progress:
            done = await reindex(store, progress, known)
        await store.index_rebuilt()
    finally:
        await store.close()
    sys.stderr.write("\n")
    print(f"fhirserver: reindexed {done} resources in {settings.store_label}", flush=True)
    return done


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
        # The web app and its server load only to serve: the store commands start in
        # about half the time without them.
        from fhirserver.app import create_app
        from fhirserver.serving import listen, serve

        try:
            settings = Settings.from_env().with_overrides(
                host=args.host,
                port=args.port,
                base_path=args.base_path,
                store=args.store,
                public_url=args.public_url,
                log_level=args.log_level,
                workers=args.workers,
            )
            refusal = settings.unsafe_to_serve()
            if refusal is not None:
                parser.error(refusal)
        except ValueError as exc:
            parser.error(str(exc))
        try:
            sock, settings = listen(settings)
        except OSError as exc:
            sys.exit(f"fhirserver: cannot listen on {settings.host}:{settings.port}: {exc}")
        try:
            app = create_app(settings)
        except ValueError as exc:
            parser.error(str(exc))
        sys.exit(serve(app, settings, sock))
    elif args.command == "mongo":
        settings, store = _store_of(args, parser)
        from fhirserver.storage.mongo import MongoStore  # [mongo] extra: only here

        if not isinstance(store, MongoStore):
            parser.error("mongo check needs a mongodb:// store (--store or FHIRSERVER_STORE)")
        sys.exit(asyncio.run(run_mongo_check(store)))
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
    elif args.command == "export":
        settings, store = _store_of(args, parser)
        sys.exit(asyncio.run(run_export(store, settings, args, parser)))
    elif args.command == "ig":
        settings, store = _store_of(args, parser)
        try:
            # Before the store is opened, so that a bad file creates no empty store.
            package = read_package(Path(args.package))
        except PackageError as exc:
            parser.error(str(exc))
        sys.exit(asyncio.run(run_ig_load(store, settings, package)))
    elif args.command in ("clients", "users"):
        settings, store = _store_of(args, parser)
        try:
            if args.command == "clients":
                jwks = getattr(args, "jwks", None)
                # Read before the store opens, so that a typo changes nothing.
                args.jwks_document = json.loads(Path(jwks).read_text()) if jwks else None
                status = asyncio.run(run_clients(store, settings, args))
            else:
                reader = password_reader(getattr(args, "password_stdin", False))
                status = asyncio.run(run_users(store, args, reader))
        except (admin.AdminError, OSError, json.JSONDecodeError) as exc:
            print(f"fhirserver {args.command}: {exc}", file=sys.stderr, flush=True)
            status = 1
        sys.exit(status)


if __name__ == "__main__":
    main()
