"""References inside a resource (R4 references.html): finding and rewriting them.

A Bundle's entries point at each other through their fullUrls, placeholders
(`urn:uuid:`, `urn:oid:`) included; a transaction rewrites those to the ids the server
assigns (R4 http.html#trules, bundle.html#references).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fhirserver.resources.codec import JSONObject

PLACEHOLDER = re.compile(r"urn:(?:uuid|oid):[^\s\"'<>#]+")


def references(value: Any) -> Iterator[JSONObject]:
    """Every Reference-like object (one with a string `reference`) in `value`, depth first;
    contained resources included."""
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value
        for child in value.values():
            if isinstance(child, dict | list):
                yield from references(child)
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict | list):
                yield from references(child)


def rewrite_references(resource: JSONObject, new_target: Callable[[str], str | None]) -> None:
    """Replace, in place, each reference for which `new_target` gives a new value; and
    the same URLs where the narrative links to them."""
    replaced: dict[str, str] = {}
    for reference in references(resource):
        old = reference["reference"]
        new = new_target(old)
        if new is not None:
            reference["reference"] = new
            replaced[old] = new
    text = resource.get("text")
    if replaced and isinstance(text, dict) and isinstance(text.get("div"), str):
        text["div"] = PLACEHOLDER.sub(lambda m: replaced.get(m.group(0), m.group(0)), text["div"])


def is_placeholder(reference: str) -> bool:
    return reference.startswith(("urn:uuid:", "urn:oid:"))
