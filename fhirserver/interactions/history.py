"""history at instance, type and system level (R4 http.html#history).

Pages are cut by the change-log sequence, newest first: a page boundary stays put
while other clients keep writing, so paging neither repeats nor skips a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fhirserver.errors import BadRequest, NotFound, NotSupported
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.resources import meta
from fhirserver.search.time import date_range
from fhirserver.storage.base import HistoryQuery, Reader, Version


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[Version]
    total: int
    # Cursor of the next (older) page, if there is one.
    next_cursor: str | None


async def history(
    store: Reader,
    params: Sequence[tuple[str, str]],
    options: ReadOptions,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
) -> HistoryPage:
    """Unknown parameters are ignored, or refused with 400 when `options.strict`."""
    query = HistoryQuery(
        resource_type=resource_type, id=resource_id, count=options.history_page_size
    )
    for name, value in params:
        query = _apply(query, name, value, options)
    if resource_id is not None:
        meta.check_id(resource_id)
        assert resource_type is not None
        if await store.read(resource_type, resource_id) is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
    versions, total = await store.history(replace(query, count=query.count + 1))
    next_cursor = None
    if query.count and len(versions) > query.count:
        versions = versions[: query.count]
        next_cursor = str(versions[-1].seq)
    elif not query.count:
        versions = []
    return HistoryPage(versions, total, next_cursor)


def _apply(query: HistoryQuery, name: str, value: str, options: ReadOptions) -> HistoryQuery:
    if name == "_count":
        count = meta.whole_number(value)
        if count is None:
            raise BadRequest(f"_count must be a whole number, not {value!r:.40}", expression=name)
        return replace(query, count=min(count, options.max_page_size))
    if name == "_since":
        return replace(query, since=date_range(value, "_since")[0])
    if name == "_at":
        return replace(query, at=date_range(value, "_at"))
    if name == "_cursor":
        cursor = meta.whole_number(value)
        if cursor is None:
            raise BadRequest(f"Invalid paging cursor {value!r:.40}", expression=name)
        return replace(query, before_seq=cursor)
    if options.strict:
        raise NotSupported(f"History parameter {name!r} is not supported", expression=name)
    return query
