"""The export's associated data (Bulk Data IG 2.0.0 export.html "includeAssociatedData",
CodeSystem include-associated-data): the Provenance resources about what the export
returned, written after the types as one more phase of the job.

- RelevantProvenanceResources: every Provenance (as of the snapshot) whose `target`
  references a non-Provenance resource that this export returned.
- LatestProvenanceResources: of those, for each such resource only the most recent
  Provenance targeting it (by `recorded`; ties are all included).

The phase pages the Provenance versions of the snapshot like any type
(export_snapshot.py) and checks each target against what the export selects: its type
is exported, its snapshot version is in the `_since`/`_until` window, in the compartment
at Patient and Group level, meets the `_typeFilter`s and the kick-off's access
(export_select.py). Targets are read per page in one `read_many`: the export's own id
set is never held. A Provenance the export returns as a type of its own (Provenance in
`_type` and selected) is not written twice; one the kick-off's access may not read is
not written at all.

Latest needs, for a target, the newest Provenance about it as of the snapshot: a
search of Provenance by `target` (each match taken as it was at the snapshot) finds
those whose current content still targets it; the search index is current, so the
Provenances written since the kick-off (read newest first from the history, down to the
snapshot: few, for an export takes minutes) are taken as they were at the snapshot too,
so that one deleted or edited since is still counted and one created since is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fhirserver.auth.confine import unrestricted, visible
from fhirserver.auth.scopes import Interaction
from fhirserver.bulk.export_request import LATEST_PROVENANCE, ExportRequest
from fhirserver.bulk.export_select import Select, in_window, selector
from fhirserver.bulk.export_snapshot import versions_at
from fhirserver.resources import codec
from fhirserver.resources.references import local_reference
from fhirserver.search.query import ID, ReferencePredicate, SearchQuery, SortKey
from fhirserver.storage.base import HistoryQuery, Store, Version

PROVENANCE = "Provenance"
_SEARCH_PAGE = 200
Key = tuple[str, str]


async def associated_provenance(
    store: Store, request: ExportRequest, snapshot_seq: int, versions: Sequence[Version]
) -> list[dict[str, Any]]:
    """Of a page of Provenance snapshot versions, the resources to write."""
    readable = _readable(request)
    candidates: list[tuple[dict[str, Any], list[Key]]] = []
    for version in versions:
        if version.body is None:
            continue
        resource = codec.load_object(version.body, "A stored resource")
        if not readable(resource) or _returned_as_type(request, version, resource):
            continue
        candidates.append((resource, _targets(resource)))
    wanted = sorted({key for _, keys in candidates for key in keys if key[0] in request.types})
    returned = await _returned(store, request, snapshot_seq, wanted)
    chosen: list[dict[str, Any]] = []
    newest: dict[Key, datetime | None] = {}
    changed: list[dict[str, Any]] | None = None
    for resource, keys in candidates:
        about = [key for key in keys if key in returned]
        if not about:
            continue
        if request.associated == LATEST_PROVENANCE:
            if changed is None:
                changed = await _changed_since(store, snapshot_seq)
            for key in about:
                if key not in newest:
                    newest[key] = await _newest(store, snapshot_seq, key, readable, changed)
            recorded = _recorded(resource)
            if not any(recorded is not None and recorded == newest[key] for key in about):
                continue
        chosen.append(resource)
    return chosen


def _readable(request: ExportRequest) -> Select:
    access = request.access()
    if unrestricted(access, Interaction.SEARCH, (PROVENANCE,)):
        return lambda resource: True
    return lambda resource: visible(access, Interaction.SEARCH, resource)


def _returned_as_type(request: ExportRequest, version: Version, resource: dict[str, Any]) -> bool:
    return (
        PROVENANCE in request.types
        and in_window(request, version.last_updated)
        and selector(request, PROVENANCE)(resource)
    )


def _targets(resource: dict[str, Any]) -> list[Key]:
    """The local `Type/id`s a Provenance's `target`s reference, Provenance excepted."""
    keys: list[Key] = []
    targets = resource.get("target")
    for target in targets if isinstance(targets, list) else ():
        local = local_reference(target)
        if local is None:
            continue
        resource_type, _, resource_id = local.partition("/")
        if resource_type != PROVENANCE:
            keys.append((resource_type, resource_id))
    return list(dict.fromkeys(keys))


async def _returned(
    store: Store, request: ExportRequest, snapshot_seq: int, keys: Sequence[Key]
) -> set[Key]:
    """Which of these resources the export returned (at their snapshot version)."""
    at_snapshot = await versions_at(store, keys, snapshot_seq)
    selectors: dict[str, Select] = {}
    returned: set[Key] = set()
    for key, version in at_snapshot.items():
        if version.body is None or not in_window(request, version.last_updated):
            continue
        select = selectors.get(key[0])
        if select is None:
            select = selectors[key[0]] = selector(request, key[0])
        if select(codec.load_object(version.body, "A stored resource")):
            returned.add(key)
    return returned


async def _changed_since(store: Store, snapshot_seq: int) -> list[dict[str, Any]]:
    """The Provenances written since the snapshot, as they were at it (those that were)."""
    keys: dict[Key, None] = {}
    before: int | None = None
    while True:
        query = HistoryQuery(
            resource_type=PROVENANCE, before_seq=before, count=_SEARCH_PAGE, with_total=False
        )
        versions, _ = await store.history(query)
        newer = [v for v in versions if v.seq > snapshot_seq]
        keys.update(((v.resource_type, v.id), None) for v in newer)
        if len(newer) < _SEARCH_PAGE:
            break
        before = newer[-1].seq
    found = await versions_at(store, list(keys), snapshot_seq)
    return [
        codec.load_object(v.body, "A stored resource") for v in found.values() if v.body is not None
    ]


async def _newest(
    store: Store, snapshot_seq: int, target: Key, readable: Select, changed: list[dict[str, Any]]
) -> datetime | None:
    """The latest `recorded` of the readable snapshot Provenances targeting `target`."""
    reference = ReferencePredicate("target", target[0], target[1])
    cursor: str | None = None
    about = [resource for resource in changed if target in _targets(resource)]
    while True:
        query = SearchQuery(
            (PROVENANCE,), ((reference,),), sort=(SortKey(ID),), count=_SEARCH_PAGE, cursor=cursor
        )
        result = await store.search(query)
        keys = [(m.resource_type, m.id) for m in result.matches]
        for version in (await versions_at(store, keys, snapshot_seq)).values():
            if version.body is not None:
                resource = codec.load_object(version.body, "A stored resource")
                if target in _targets(resource):
                    about.append(resource)
        cursor = result.next_cursor
        if cursor is None:
            break
    times = [
        recorded
        for resource in about
        if readable(resource) and (recorded := _recorded(resource)) is not None
    ]
    return max(times, default=None)


def _recorded(resource: dict[str, Any]) -> datetime | None:
    """Provenance.recorded (an instant, R4 provenance.html), None if missing or invalid."""
    value = resource.get("recorded")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
