"""batch and transaction (R4 http.html#transaction): a Bundle of interactions at once.

A transaction runs in one unit of work: its entries are read (transaction_entries.py),
resolved (transaction_resolve.py: ids, conditional matches, references rewritten,
overlaps refused), then executed here in the spec's order (R4 http.html#trules: DELETE,
POST, PUT / PATCH, GET / HEAD) through crud's steps inside a unit of work. Any failure
raises, naming the entry, and the unit rolls back: nothing is left behind.

A batch runs each entry alone through the same steps, in its own unit of work; an
entry's failure is its own response. Responses come back in request order.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from fhirserver.errors import BadRequest, FHIRError, NotSupported
from fhirserver.interactions import crud
from fhirserver.interactions.checked import CheckedBundle
from fhirserver.interactions.history import HistoryPage, history
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.search import search, system_scope
from fhirserver.interactions.transaction_entries import (
    Entry,
    Params,
    guarded,
    in_processing_order,
    read_entries,
    read_entry,
)
from fhirserver.interactions.transaction_resolve import resolve
from fhirserver.resources.codec import JSONObject
from fhirserver.search.query import SearchQuery
from fhirserver.storage.base import Reader, SearchResult, Store, UnitOfWork, Version
from fhirserver.storage.retry import run_unit


@dataclass(frozen=True, slots=True)
class EntryResult:
    """What one entry did: a status, and the version, search page or history page it
    produced, or the error it met (batch only)."""

    entry: Entry | None
    status: int
    version: Version | None = None
    search: tuple[SearchQuery, SearchResult] | None = None
    history: HistoryPage | None = None
    error: FHIRError | None = None


async def process(
    store: Store,
    context: WriteContext,
    bundle: JSONObject | CheckedBundle,
    options: ReadOptions,
) -> list[EntryResult]:
    """Run a batch or transaction Bundle; the results in request order. A CheckedBundle's
    entries were validated already (off the event loop: rest/endpoints.py)."""
    checked = bundle if isinstance(bundle, CheckedBundle) else None
    if isinstance(bundle, CheckedBundle):
        bundle = bundle.bundle
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(
            f"POST to the base takes a batch or transaction Bundle, not type {kind!r}",
            expression="Bundle.type",
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be a list", expression="Bundle.entry")
    if kind == "transaction":
        entries = read_entries(raw_entries, options.base_url, validated=checked is not None)
        return await transaction(store, context, entries, options)
    return await batch(store, context, raw_entries, options, checked)


async def transaction(
    store: Store, context: WriteContext, entries: list[Entry], options: ReadOptions
) -> list[EntryResult]:
    return (await transactions(store, context, [entries], options))[0]


async def transactions(
    store: Store, context: WriteContext, bundles: list[list[Entry]], options: ReadOptions
) -> list[list[EntryResult]]:
    """Transactions one after another in one unit of work: each sees those before it,
    and all are written or none (a caller may then run them one by one; their entries
    were changed on the way: read them again). `fhirserver import` writes its Bundles
    so, a commit per few thousand resources rather than per Bundle."""
    # Resolution writes ids and references into the entries: a unit that is run again
    # (storage/retry.py) starts from a copy of them as they came. Pickled: a third of
    # the memory of a deep copy of the entries' dicts, and several times faster.
    pristine = pickle.dumps(bundles, pickle.HIGHEST_PROTOCOL) if store.concurrent_units else None
    attempts = 0

    async def work(unit: UnitOfWork) -> list[dict[int, EntryResult]]:
        nonlocal attempts
        attempts += 1
        todo = bundles if attempts == 1 or pristine is None else pickle.loads(pristine)
        return [await _run(unit, context, entries, options) for entries in todo]

    runs = await run_unit(store, work)
    return [
        [results[entry.index] for entry in entries]
        for entries, results in zip(bundles, runs, strict=True)
    ]


async def batch(
    store: Store,
    context: WriteContext,
    raw_entries: list[Any],
    options: ReadOptions,
    checked: CheckedBundle | None = None,
) -> list[EntryResult]:
    """Each entry alone, in its own unit of work, in the transaction order; a failure
    is that entry's answer."""
    results: dict[int, EntryResult] = {}
    entries: list[Entry] = []
    for index, raw in enumerate(raw_entries):
        try:
            if checked is not None and index in checked.refused:
                raise checked.refused[index]
            entries.append(read_entry(index, raw, options.base_url, validated=checked is not None))
        except FHIRError as exc:
            results[index] = EntryResult(None, exc.status, error=exc)
    for entry in in_processing_order(entries):
        try:
            results[entry.index] = (await transaction(store, context, [entry], options))[0]
        except FHIRError as exc:
            results[entry.index] = EntryResult(entry, exc.status, error=exc)
    return [results[index] for index in range(len(raw_entries))]


async def _run(
    unit: UnitOfWork, context: WriteContext, entries: list[Entry], options: ReadOptions
) -> dict[int, EntryResult]:
    ordered = in_processing_order(entries)
    await resolve(unit, context, ordered)
    results: dict[int, EntryResult] = {}
    for entry in ordered:
        step = _execute(unit, context, entry, results, options)
        results[entry.index] = await guarded(entry, step)
    return results


async def _execute(
    unit: UnitOfWork,
    context: WriteContext,
    entry: Entry,
    done: dict[int, EntryResult],
    options: ReadOptions,
) -> EntryResult:
    method = entry.method
    if method in ("GET", "HEAD"):
        return await _read(unit, entry, options)
    resource_id = entry.resource_id
    if method == "DELETE":
        tombstone = await crud.delete_in(unit, context, entry.current, entry.preconditions)
        return EntryResult(entry, 204, tombstone)
    if entry.existing is not None:
        return EntryResult(entry, 200, entry.existing)
    if entry.same_as is not None:
        return EntryResult(entry, 200, done[entry.same_as.index].version)
    assert resource_id is not None
    if method == "PATCH":
        assert entry.patcher is not None
        written = await crud.patch_in(
            unit,
            context,
            entry.resource_type,
            resource_id,
            entry.current,
            entry.patcher,
            entry.preconditions,
        )
    elif method == "POST":
        assert entry.resource is not None
        written = await crud.write_new(
            unit, context, entry.resource, resource_id, entry.search_index
        )
    else:
        assert entry.resource is not None
        written = await crud.update_in(
            unit,
            context,
            entry.resource,
            resource_id,
            entry.current,
            entry.preconditions,
            entry.search_index,
        )
    return EntryResult(entry, 201 if written.created else 200, written.version)


async def _read(reader: Reader, entry: Entry, options: ReadOptions) -> EntryResult:
    target = entry.target
    if target.kind == "instance":
        assert target.resource_type is not None and target.id is not None
        version = await crud.read(reader, target.resource_type, target.id, options.access)
        # request.ifNoneMatch on a read: 304 when the client's copy is current.
        unchanged = entry.preconditions.none_match(version.version)
        return EntryResult(entry, 304 if unchanged else 200, version)
    if target.kind == "version":
        assert target.resource_type and target.id and target.version
        version = await crud.vread(
            reader, target.resource_type, target.id, target.version, options.access
        )
        return EntryResult(entry, 200, version)
    if target.kind in ("system-history", "type-history", "instance-history"):
        page = await history(
            reader, entry.params, options, resource_type=target.resource_type, resource_id=target.id
        )
        return EntryResult(entry, 200, history=page)
    if target.kind == "metadata":
        raise NotSupported("Read the CapabilityStatement with GET [base]/metadata")
    types, criteria, compartment = _search_scope(entry)
    found = await search(reader, types, criteria, options, compartment)
    return EntryResult(entry, 200, search=found)


def _search_scope(entry: Entry) -> tuple[tuple[str, ...], Params, tuple[str, str] | None]:
    target = entry.target
    if target.kind == "system":
        return (*system_scope(entry.params), None)
    if target.kind == "compartment":
        assert target.member_type and target.resource_type and target.id
        return (target.member_type,), entry.params, (target.resource_type, target.id)
    assert target.resource_type is not None
    return (target.resource_type,), entry.params, None
