"""Synthea transaction Bundles loaded into a fhirserver SQLite store, without HTTP, cached.

Each Bundle's entries are POSTs with `urn:uuid:` fullUrls that other entries refer to.
`load` gives every entry the uuid as its id, rewrites each `"reference": "urn:uuid:X"`
to `"Type/X"`, and writes the resources one by one with `crud.update` (PUT semantics,
update-as-create) into a `SqliteStore`, one Bundle file at a time, so memory stays bounded
by the largest file. What is measured along the way is the load rate (resources/s through
validation, index extraction and one SQLite commit each).

`loaded_store` keeps the result under the temp dir, keyed by the data (file names and
sizes) and by the source of the code that decides what the database holds (the schema,
index extraction and search parameters, and this loader), so `make bench` reloads only
when one of them changed. `python -m bench.synthea` builds (or finds) it and prints the path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhirserver.bulk.importer import AS_RECORDED
from fhirserver.errors import FHIRError
from fhirserver.interactions import crud
from fhirserver.storage.sqlite import SqliteStore, schema

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("BENCH_SYNTHEA_DIR", "/work/shared/data/synthea-2019"))
CACHE_DIR = Path(tempfile.gettempdir()) / "fhirserver-bench-cache"
# The code whose change changes what a loaded database holds. Of the schema module only
# the tables count (schema_text): its connection settings (page caches) do not change
# the file, and rebuilding the 100x store for them took about half an hour.
SOURCES = (
    "fhirserver/storage/sqlite/index.py",
    "fhirserver/search/extract.py",
    "fhirserver/search/params.py",
    "bench/synthea.py",
)
URN = "urn:uuid:"
PROGRESS_SECONDS = 10.0


class LoadFailed(RuntimeError):
    """The data is missing or unreadable, or nothing could be loaded."""


@dataclass(frozen=True, slots=True)
class Loaded:
    path: Path
    resources: int
    rejected: int
    seconds: float


def bundle_files(data_dir: Path = DATA_DIR) -> list[Path]:
    files = sorted(data_dir.glob("*.json"))
    if not files:
        raise LoadFailed(f"no Synthea Bundles (*.json) in {data_dir}")
    return files


def cache_key(files: list[Path]) -> str:
    """Hash of the data's names and total size, the SOURCES' text and the schema's tables."""
    digest = hashlib.sha256()
    digest.update(f"{len(files)} {sum(f.stat().st_size for f in files)}\n".encode())
    for file in files:
        digest.update(file.name.encode() + b"\n")
    for source in SOURCES:
        digest.update(source.encode() + b"\0" + (ROOT / source).read_bytes())
    digest.update(schema_text().encode())
    return digest.hexdigest()[:16]


def schema_text() -> str:
    """The SQLite store's tables, as its schema module defines them."""
    return "\0".join(
        [str(schema.SCHEMA_VERSION), schema.SCHEMA, schema.INDEX_SCHEMA, repr(schema.INDEX_TABLES)]
    )


def resolve_references(bundle: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The Bundle's resources as (type, id, resource), ids from the urn:uuid fullUrls and
    every urn:uuid reference to one of them rewritten to Type/id (in place)."""
    targets: dict[str, str] = {}
    entries = []
    for entry in bundle.get("entry", []):
        resource = entry["resource"]
        full_url: str = entry["fullUrl"]
        if not full_url.startswith(URN):
            raise LoadFailed(f"entry fullUrl {full_url!r} is not a urn:uuid")
        resource_type, resource_id = resource["resourceType"], full_url.removeprefix(URN)
        targets[full_url] = f"{resource_type}/{resource_id}"
        resource["id"] = resource_id
        entries.append((resource_type, resource_id, resource))
    _rewrite(bundle, targets)
    return entries


def _rewrite(node: Any, targets: dict[str, str]) -> None:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference in targets:
            node["reference"] = targets[reference]
        for value in node.values():
            _rewrite(value, targets)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value, targets)


def _bundles(files: list[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for file in files:
        with file.open("rb") as stream:
            yield file, json.load(stream)


async def load(files: list[Path], path: Path) -> Loaded:
    """Write every resource of `files` into a new store at `path`; print the rate."""
    # synchronous=OFF: a build that dies half-way is thrown away, never renamed into place.
    store = SqliteStore(str(path), synchronous="OFF")
    await store.open()
    written = rejected = 0
    started = last_report = time.perf_counter()
    try:
        for number, (file, bundle) in enumerate(_bundles(files), 1):
            for resource_type, resource_id, resource in resolve_references(bundle):
                try:
                    await crud.update(store, AS_RECORDED, resource_type, resource_id, resource)
                    written += 1
                except FHIRError as error:
                    rejected += 1
                    print(f"synthea: {file.name}: {resource_type}/{resource_id}: {error}")
            now = time.perf_counter()
            if now - last_report >= PROGRESS_SECONDS or number == len(files):
                last_report = now
                print(
                    f"synthea: {number}/{len(files)} bundles, {written} resources, "
                    f"{written / (now - started):.0f} resources/s",
                    flush=True,
                )
    finally:
        await store.close()
    if written == 0:
        raise LoadFailed(f"none of the {rejected} resources could be loaded")
    return Loaded(path, written, rejected, time.perf_counter() - started)


def _finish(path: Path) -> None:
    """Fold the WAL into the main file, so the one file is the whole database."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def loaded_store(data_dir: Path = DATA_DIR) -> Path:
    """The path of a store holding all of `data_dir`, loading it if no cached one fits."""
    files = bundle_files(data_dir)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / f"synthea-{cache_key(files)}.sqlite"
    if target.exists():
        print(f"synthea: cached store {target}", flush=True)
        return target
    print(f"synthea: loading {len(files)} bundles from {data_dir} into {target}", flush=True)
    building = CACHE_DIR / f"building-{os.getpid()}-{target.name}"
    try:
        loaded = asyncio.run(load(files, building))
        _finish(building)
        building.replace(target)
    finally:
        for leftover in _files_of(building):
            leftover.unlink(missing_ok=True)
    print(
        f"synthea: loaded {loaded.resources} resources ({loaded.rejected} rejected) in "
        f"{loaded.seconds:.0f} s, {loaded.resources / loaded.seconds:.0f} resources/s",
        flush=True,
    )
    _remove_stale(target)
    return target


def _files_of(database: Path) -> list[Path]:
    return [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]


def _remove_stale(keep: Path) -> None:
    """Drop stores cached for older code or data, and builds whose process died (killed
    mid-load): each is a few hundred MB."""
    for old in CACHE_DIR.glob("synthea-*.sqlite"):
        if old != keep:
            for file in _files_of(old):
                file.unlink(missing_ok=True)
    for build in CACHE_DIR.glob("building-*.sqlite"):
        pid = build.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            for file in _files_of(build):
                file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> None:
    try:
        print(loaded_store())
    except LoadFailed as error:
        sys.exit(f"synthea: {error}")


if __name__ == "__main__":
    main()
