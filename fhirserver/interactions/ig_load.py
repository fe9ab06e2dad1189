"""Loading an Implementation Guide package into the store (README "Validation and
profiles"): its CodeSystems, ValueSets, StructureDefinitions and SearchParameters,
each written through the normal write path (validated like any write) as a
conditional update on its canonical `url` (and `version`), so loading a package again
updates the same resources rather than adding copies."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fhirserver.errors import FHIRError
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.package import Package
from fhirserver.resources import codec
from fhirserver.search.params import Registry, joined
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Reader, Store

_PAGE = 500


@dataclass
class Loaded:
    written: Counter[str] = field(default_factory=Counter)
    # (resource type/id or url, why it was refused)
    refused: list[tuple[str, str]] = field(default_factory=list)


async def load_package(store: Store, context: WriteContext, package: Package) -> Loaded:
    loaded = Loaded()
    for resource in package.resources:
        resource_type = str(resource["resourceType"])
        criteria = [("url", str(resource["url"]))]
        if isinstance(resource.get("version"), str):
            criteria.append(("version", resource["version"]))
        try:
            await crud.conditional_update(store, context, resource_type, criteria, resource)
        except FHIRError as refused:
            loaded.refused.append((f"{resource_type} {resource['url']}", str(refused)))
            continue
        loaded.written[resource_type] += 1
    return loaded


async def stored_registry(store: Reader) -> Registry:
    """The shipped search parameters joined by every SearchParameter in the store (an
    IG's, after `ig load`): what an app searches and indexes with once its store is open."""
    found: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        params = [("_count", str(_PAGE)), *([("_cursor", cursor)] if cursor else [])]
        page = await store.search(parse_search(("SearchParameter",), params, max_count=_PAGE))
        found += [codec.load_object(v.body) for v in page.matches if v.body is not None]
        cursor = page.next_cursor
        if cursor is None:
            return joined(found)
