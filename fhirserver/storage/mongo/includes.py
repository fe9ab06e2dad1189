"""`_include` and `_revinclude` (R4 search.html#include) over the embedded `ref` arrays:
the MongoDB lookups the shared rounds (`storage/includes.py`) ask for. An include
reads the references of the documents in hand; a reverse include queries for the
documents whose references point at them."""

from __future__ import annotations

from collections.abc import Sequence

from fhirserver.search.query import Include
from fhirserver.storage.includes import Included, Key, follow_includes
from fhirserver.storage.mongo.documents import Document, keys_filter
from fhirserver.storage.mongo.search import VERSION_PROJECTION, Finder


async def find_includes(
    find: Finder, includes: Sequence[Include], matches: Sequence[Document], limit: int
) -> Included[Document]:
    """The included documents, in (type, id) order per round; `matches` carry `ref`."""

    async def reach(include: Include, frontier: list[Document]) -> set[Key]:
        if include.reverse:
            return await _referrers(find, include, frontier)
        return _targets(include, frontier)

    async def load(keys: list[Key]) -> list[Document]:
        documents = await find(
            {"$and": [keys_filter(keys), {"body": {"$ne": None}}]}, VERSION_PROJECTION
        )
        return sorted(documents, key=_key)

    return await follow_includes(includes, matches, _key, reach, load, limit)


def _key(document: Document) -> Key:
    return document["type"], document["id"]


def _targets(include: Include, frontier: list[Document]) -> set[Key]:
    found: set[Key] = set()
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
            found.add((entry["tt"], entry["ti"]))
    return found


async def _referrers(find: Finder, include: Include, frontier: list[Document]) -> set[Key]:
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
    return {_key(document) for document in await find(where, {"type": 1, "id": 1})}
