"""`_include` and `_revinclude` (R4 search.html#include) over the embedded `ref` arrays:
the resources a page of matches refers to, or is referred to by, followed again for
`:iterate`."""

from __future__ import annotations

from collections.abc import Sequence

from fhirserver.search.query import Include
from fhirserver.storage.base import MAX_INCLUDE_ROUNDS, MAX_INCLUDED
from fhirserver.storage.mongo.documents import Document, keys_filter, resource_key
from fhirserver.storage.mongo.search import VERSION_PROJECTION, Finder


async def find_includes(
    find: Finder, includes: Sequence[Include], matches: Sequence[Document]
) -> list[Document]:
    """The included documents, in (type, id) order per round; `matches` carry `ref`."""
    if not includes or not matches:
        return []
    seen = {match["_id"] for match in matches}
    frontier = list(matches)
    found: list[Document] = []
    for round_number in range(MAX_INCLUDE_ROUNDS):
        active = [i for i in includes if round_number == 0 or i.iterate]
        if not active or not frontier:
            break
        keys: set[str] = set()
        for include in active:
            if include.reverse:
                keys.update(await _referrers(find, include, frontier))
            else:
                keys.update(_targets(include, frontier))
        new = sorted(keys - seen)[: MAX_INCLUDED - len(found)]
        seen.update(new)
        # "Type/id" sorts as (type, id): no type name holds a character below "/".
        frontier = sorted(
            await find(
                {"$and": [keys_filter(_pair(key) for key in new), {"body": {"$ne": None}}]},
                VERSION_PROJECTION,
            ),
            key=lambda document: str(document["_id"]),
        )
        found.extend(frontier)
    return found


def _targets(include: Include, frontier: list[Document]) -> set[str]:
    found: set[str] = set()
    for document in frontier:
        if include.source_type not in ("*", document["type"]):
            continue
        for entry in document.get("ref", ()):
            if entry["ti"] is None or entry["tt"] is None:
                continue
            if include.param != "*" and entry["p"] != include.param:
                continue
            if include.target_type not in (None, entry["tt"]):
                continue
            found.add(resource_key(entry["tt"], entry["ti"]))
    return found


async def _referrers(find: Finder, include: Include, frontier: list[Document]) -> set[str]:
    by_type: dict[str, list[str]] = {}
    for document in frontier:
        if include.target_type in (None, document["type"]):
            by_type.setdefault(document["type"], []).append(document["id"])
    if not by_type:
        return set()
    pointing = [{"tt": t, "ti": {"$in": ids}} for t, ids in sorted(by_type.items())]
    element: Document = pointing[0] if len(pointing) == 1 else {"$or": pointing}
    if include.param != "*":
        element = {"p": include.param, **element}
    where: Document = {"ref": {"$elemMatch": element}, "body": {"$ne": None}}
    if include.source_type != "*":
        where["type"] = include.source_type
    return {str(document["_id"]) for document in await find(where, {"_id": 1})}


def _pair(key: str) -> tuple[str, str]:
    resource_type, resource_id = key.split("/", 1)
    return resource_type, resource_id
