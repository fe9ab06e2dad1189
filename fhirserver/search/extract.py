"""Index values extracted from a resource at write time, stored with it atomically."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fhirserver.resources.codec import JSONObject
from fhirserver.search.params import registry
from fhirserver.search.query import TokenEntry

# Parameters indexed so far: those conditional interactions match on.
INDEXED_TOKENS = ("identifier",)


def index_entries(resource: JSONObject) -> tuple[TokenEntry, ...]:
    resource_type = resource["resourceType"]
    entries: list[TokenEntry] = []
    for code in INDEXED_TOKENS:
        param = registry().get(resource_type, code)
        if param is None:
            continue
        for path in param.paths(resource_type):
            for value in _walk(resource, path):
                if isinstance(value, dict) and ("system" in value or "value" in value):
                    entries.append(TokenEntry(code, value.get("system"), value.get("value")))
    return tuple(dict.fromkeys(entries))


def _walk(node: Any, path: tuple[str, ...]) -> Iterator[Any]:
    if not path:
        yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, path)
    elif isinstance(node, dict) and path[0] in node:
        child = node[path[0]]
        for item in child if isinstance(child, list) else (child,):
            yield from _walk(item, path[1:])
