"""history at instance, type and system level (R4 http.html#history).

Pages are cut by the change-log sequence, newest first: a page boundary stays put
while other clients keep writing, so paging neither repeats nor skips a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from fhirserver.auth.access import Access
from fhirserver.auth.confine import unrestricted
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import BadRequest, NotFound, NotSupported
from fhirserver.interactions.guard import only_visible, require, shows
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.resources import meta
from fhirserver.resources.definitions import resource_types
from fhirserver.search.time import date_range
from fhirserver.storage.base import HistoryQuery, Reader, Version


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[Version]
    # None where the token's reach hid some versions: their number is not the client's.
    total: int | None
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
    access = options.access
    # SMART 2.2: `read` covers a resource's own history, `search` a type's or the
    # system's.
    interaction = Interaction.READ if resource_id is not None else Interaction.SEARCH
    types = (resource_type,) if resource_type is not None else resource_types()
    if resource_type is not None:
        require(access, interaction, resource_type)
    if resource_id is not None:
        meta.check_id(resource_id)
        assert resource_type is not None
        current = await store.read(resource_type, resource_id)
        if current is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if not unrestricted(access, interaction, types):
            await _require_some_version_visible(store, access, query)
    versions, stored_total = await store.history(replace(query, count=query.count + 1))
    total: int | None = stored_total
    next_cursor = None
    if query.count and len(versions) > query.count:
        versions = versions[: query.count]
        next_cursor = str(versions[-1].seq)
    elif not query.count:
        versions = []
    if not unrestricted(access, interaction, types):
        # Versions outside the token's reach are left out of the page (which may then
        # hold fewer than `_count`); the total would count them, so it is not given.
        versions, total = _visible_versions(access, interaction, versions, resource_id), None
    return HistoryPage(versions, total, next_cursor)


async def _require_some_version_visible(store: Reader, access: Access, query: HistoryQuery) -> None:
    """A resource none of whose versions the token may read is, to it, not there."""
    everything = replace(query, count=1000, since=None, at=None, before_seq=None)
    versions, _ = await store.history(everything)
    if not any(shows(access, Interaction.READ, version) for version in versions):
        raise NotFound(f"{query.resource_type}/{query.id} is not known")


def _visible_versions(
    access: Access, interaction: Interaction, versions: list[Version], resource_id: str | None
) -> list[Version]:
    """The versions `access` may see. In a resource's own history, its deletions show
    when some content version does (they belong to a resource the token may read)."""
    shown = only_visible(access, interaction, versions)
    if resource_id is not None and shown:
        return [v for v in versions if v in shown or v.deleted]
    return shown


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
