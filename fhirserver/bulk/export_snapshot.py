"""The export's snapshot: each resource as it was when the export was kicked off
(Bulk Data IG 2.0.0 export.html "transactionTime": the response includes the
resources as of that instant; issue 14 "a consistent snapshot": a resource written
during the export is in it whole at one version or not at all, never twice).

Why the change log, and not a search of the current resources: a search sees what is
current while it pages, so a resource updated, deleted or changed to no longer match
after kick-off would be missed or, read again on a later page, exported twice; and
neither backend keeps a read transaction open for the hours an export can take. The
versions themselves never change once written. So the kick-off notes the change
log's settled bound (`snapshot_seq`, `Store.settled_seq`): every version up to that
number is committed and every later write gets a higher one (SQLite: one writer at a
time draws increasing numbers; MongoDB: the watermark over the counter stripes,
storage/mongo/unit.py). The export then
pages each type's versions newest first below that bound (`HistoryQuery.before_seq`,
keyset paging that new writes cannot shift), and keeps a version when it is the
newest one of its resource up to the bound: the version the resource had at kick-off.
A resource's versions are numbered 1, 2, 3 ...: version v is the snapshot's when
there is no version v+1, or version v+1 was written after the bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fhirserver.storage.base import HistoryQuery, Store, Version


@dataclass(frozen=True)
class Page:
    """One chunk of a type's versions below the bound: those that are the snapshot's,
    and where the next chunk starts (None: the type is done)."""

    versions: list[Version]
    next_before_seq: int | None


async def snapshot_page(
    store: Store,
    resource_type: str,
    snapshot_seq: int,
    before_seq: int | None,
    since: datetime | None,
    limit: int,
) -> Page:
    """The next chunk of `resource_type`'s snapshot versions (deletions included), newest
    first, from versions below `before_seq` (None: from the bound) and written at or
    after `since`."""
    start = snapshot_seq + 1 if before_seq is None else before_seq
    versions, _ = await store.history(
        HistoryQuery(
            resource_type=resource_type,
            since=since,
            before_seq=start,
            count=limit,
            # The export pages by keyset and never shows a total: counting every match
            # on every page would cost more the more there is to export.
            with_total=False,
        )
    )
    # The page's resources' current versions in one read, not one read each.
    currents = await store.read_many([(v.resource_type, v.id) for v in versions])
    kept = [
        version
        for version in versions
        if await _at_snapshot(
            store, version, currents.get((version.resource_type, version.id)), snapshot_seq
        )
    ]
    done = len(versions) < limit
    return Page(kept, None if done else versions[-1].seq)


async def _at_snapshot(
    store: Store, version: Version, current: Version | None, snapshot_seq: int
) -> bool:
    if current is None or current.version == version.version:
        return current is not None
    if current.seq <= snapshot_seq:
        # A newer version was already there at kick-off.
        return False
    following = await store.vread(version.resource_type, version.id, version.version + 1)
    return following is None or following.seq > snapshot_seq


async def versions_at(
    store: Store, keys: Sequence[tuple[str, str]], snapshot_seq: int
) -> dict[tuple[str, str], Version]:
    """These resources as they were at the snapshot (a deletion included, as a version
    without a body); those created after it, or unknown, are left out. One `read_many`
    for the current versions, and a history read only for those written since."""
    currents = await store.read_many(keys)
    found: dict[tuple[str, str], Version] = {}
    for key, current in currents.items():
        if current.seq <= snapshot_seq:
            found[key] = current
            continue
        query = HistoryQuery(
            resource_type=key[0], id=key[1], count=1, before_seq=snapshot_seq + 1, with_total=False
        )
        older, _ = await store.history(query)
        if older:
            found[key] = older[0]
    return found
