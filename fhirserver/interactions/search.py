"""search (R4 http.html#search, search.html): type, system and compartment searches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fhirserver.auth.compartment import membership
from fhirserver.auth.confine import confine, unrestricted
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import BadRequest, NotFound, TooCostly
from fhirserver.interactions.guard import only_visible
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.resources import codec, meta
from fhirserver.resources.definitions import is_resource_type, resource_types
from fhirserver.search.confirm import needs_confirmation
from fhirserver.search.extract import INDEX_CUT
from fhirserver.search.match import matches
from fhirserver.search.params import Registry
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery
from fhirserver.storage.base import Reader, SearchResult, Version

Params = Sequence[tuple[str, str]]

# Candidates a total is counted over when index values may have been cut, and how many
# are confirmed at a time.
COUNT_AT_MOST = 10_000
COUNT_PAGE = 1000


async def search(
    store: Reader,
    resource_types_searched: tuple[str, ...],
    params: Params,
    options: ReadOptions,
    compartment: tuple[str, str] | None = None,
) -> tuple[SearchQuery, SearchResult]:
    """`compartment`: (compartment type, owner id) for GET Patient/[id]/[type]."""
    query = parse_search(
        resource_types_searched,
        params,
        strict=options.strict,
        default_count=options.search_page_size,
        max_count=options.max_page_size,
        base_url=options.base_url,
        known=options.known,
    )
    query = replace(query, max_included=options.max_included)
    if compartment is not None:
        query = _in_compartment(query, *compartment)
    # search.html#count: "_count=0 ... SHALL be treated as _summary=count".
    if query.summary == "count" or query.count == 0:
        query = replace(query, summary="count", count=0, total="accurate", includes=())
    access = options.access
    if unrestricted(access, Interaction.SEARCH, query.resource_types):
        return query, await confirmed(store, query, await store.search(query), options.known)
    # The token's reach becomes part of the query (DESIGN.md "Authorization"); what
    # `_include` / `_revinclude` bring in is checked one by one, as a search would.
    confined = confine(query, access, Interaction.SEARCH)
    result = await store.search(confined)
    included = only_visible(access, Interaction.SEARCH, result.included)
    return query, await confirmed(
        store, confined, replace(result, included=included), options.known
    )


async def confirmed(
    store: Reader, query: SearchQuery, result: SearchResult, known: Registry | None
) -> SearchResult:
    """The result without the matches the store let in on cut index values
    (search/confirm.py). The store's total counts them too: when a total was asked for,
    it is counted again over confirmed candidates (`confirmed_total`)."""
    if not needs_confirmation(query):
        return result
    total = None
    if query.total == "accurate":
        total = await confirmed_total(store, query, known)
        if total is None and query.summary == "count":
            raise TooCostly(
                f"More than {COUNT_AT_MOST} resources share the first {INDEX_CUT}"
                " characters of the criteria's values; they cannot all be compared whole"
            )
    return replace(result, matches=holding(query, result.matches, known), total=total)


async def confirmed_total(store: Reader, query: SearchQuery, known: Registry | None) -> int | None:
    """How many resources match `query`, each of the store's candidates confirmed, a
    page at a time; None past COUNT_AT_MOST candidates, where a total is left out, as
    HAPI leaves out one it cannot give exactly (search.html#total: "the server MAY
    omit it")."""
    pages = replace(
        query,
        count=COUNT_PAGE,
        total="none",
        summary=None,
        elements=(),
        includes=(),
        sort=(),
        cursor=None,  # from the first match, whatever page was asked for
    )
    candidates = total = 0
    while True:
        page = await store.search(pages)
        candidates += len(page.matches)
        total += len(holding(query, page.matches, known))
        if page.next_cursor is None:
            return total
        if candidates >= COUNT_AT_MOST:
            return None
        pages = replace(pages, cursor=page.next_cursor)


def holding(query: SearchQuery, versions: list[Version], known: Registry | None) -> list[Version]:
    """The versions `query` matches, tested on each resource by the in-memory matcher
    with the search parameters `query` was parsed with (`known`; None: the shipped)."""
    return [
        v for v in versions if v.body and matches(query, codec.load_object(v.body), known=known)
    ]


def system_scope(params: Params) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """A system-level search's types (`_type`, or every type) and its other criteria."""
    return system_types(params), [(k, v) for k, v in params if k != "_type"]


def system_types(params: Params) -> tuple[str, ...]:
    """The types a system-level search covers: `_type`, or every type."""
    named = [t.strip() for name, value in params if name == "_type" for t in value.split(",")]
    if not named:
        return resource_types()
    for name in named:
        if not is_resource_type(name):
            raise BadRequest(f"Unknown resource type {name!r} in _type", expression="_type")
    return tuple(dict.fromkeys(named))


def _in_compartment(query: SearchQuery, compartment: str, owner_id: str) -> SearchQuery:
    """GET Patient/[id]/[type]: only resources in that patient's compartment
    (the official Patient CompartmentDefinition)."""
    if compartment != "Patient":
        raise NotFound(f"Only the Patient compartment is supported, not {compartment!r}")
    meta.check_id(owner_id)
    members = membership(query.resource_type, owner_id)
    if not members:
        raise BadRequest(f"{query.resource_type} is not in the Patient compartment")
    return replace(query, clauses=(members, *query.clauses))
