"""Rebuild every index entry from the stored resources (DESIGN.md "Search"), after search
parameter definitions or extraction change. Streams in batches: memory stays bounded.

Works on any Store through its protocol; it needs search's extraction, which storage
may import (search never imports storage)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fhirserver.resources import codec
from fhirserver.search.extract import index_entries
from fhirserver.search.params import Registry
from fhirserver.storage.base import Store, UnitOfWork, Version
from fhirserver.storage.retry import run_unit

BATCH = 500

Progress = Callable[[int, int], None]


async def reindex(
    store: Store, progress: Progress | None = None, known: Registry | None = None
) -> int:
    """Reindex every current resource; `progress(done, total)` after each batch.
    `known`: the search parameters (default: the shipped ones)."""
    total = await store.count()
    done = 0
    after: tuple[str, str] | None = None
    while batch := await store.scan(after, BATCH):
        await run_unit(store, partial(_set_indexes, batch=batch, known=known))
        done += len(batch)
        after = (batch[-1].resource_type, batch[-1].id)
        if progress is not None:
            progress(done, total)
    return done


async def _set_indexes(unit: UnitOfWork, batch: list[Version], known: Registry | None) -> None:
    for version in batch:
        assert version.body is not None
        entries = index_entries(codec.load_object(version.body), known)
        await unit.set_index(version, entries)


async def rebuild_outdated(
    store: Store, progress: Progress | None = None, known: Registry | None = None
) -> bool:
    """Rebuild the index if the store found it outdated when opened, and record that it
    is current only once the rebuild is done; whether there was one to do."""
    if not store.index_outdated:
        return False
    await reindex(store, progress, known)
    await store.index_rebuilt()
    store.index_outdated = False
    return True
