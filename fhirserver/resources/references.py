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


def local_reference(reference: Any) -> str | None:
    """`Type/id` of a literal reference, relative or absolute (version stripped); None for
    anything else (contained `#x`, `urn:` placeholders, a missing reference)."""
    if isinstance(reference, dict):
        reference = reference.get("reference")
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2] or not parts[-1] or not parts[-2][0].isupper():
        return None
    return f"{parts[-2]}/{parts[-1]}"


def rewrite_references(resource: JSONObject, new_target: Callable[[str], str | None]) -> bool:
    """Replace, in place, each link for which `new_target` gives a new value; whether
    anything changed. Links are Reference.reference, elements of uri-like types (those
    named `url`, and the uri, url, oid and uuid choices of `value[x]`), and
    the narrative's `href` and `src` attributes (R4 bundle.html#references)."""
    changed = _rewrite(resource, new_target)
    text = resource.get("text")
    if isinstance(text, dict) and isinstance(text.get("div"), str):
        div = _LINK.sub(
            lambda m: f"{m.group(1)}{new_target(m.group(2)) or m.group(2)}{m.group(3)}",
            text["div"],
        )
        changed = changed or div != text["div"]
        text["div"] = div
    return changed


_URI_KEYS = frozenset({"reference", "url", "valueUri", "valueUrl", "valueOid", "valueUuid"})
_LINK = re.compile(r"""((?:href|src)\s*=\s*")([^"]*)(")""")


def _rewrite(value: Any, new_target: Callable[[str], str | None]) -> bool:
    changed = False
    if isinstance(value, dict):
        for key, child in value.items():
            if isinstance(child, str):
                if key in _URI_KEYS and (new := new_target(child)) is not None:
                    value[key] = new
                    changed = True
            elif isinstance(child, dict | list):
                changed = _rewrite(child, new_target) or changed
    elif isinstance(value, list):
        for child in value:
            if isinstance(child, dict | list):
                changed = _rewrite(child, new_target) or changed
    return changed


def is_placeholder(reference: str) -> bool:
    return reference.startswith(("urn:uuid:", "urn:oid:"))
