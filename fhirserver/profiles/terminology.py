"""The small expansion a profile's own required bindings need (R4 valueset.html#compose):
codes listed in `include.concept`, or every concept of an included CodeSystem that we
hold whole. Anything else (filters, imported ValueSets, external systems such as SNOMED
CT or LOINC) is not expanded here: the binding is then reported as unchecked. The core
bindings of R4 are the core binding module's, not this one's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhirserver.profiles.model import CodeSet
from fhirserver.resources.codec import JSONObject


def expand(value_set: JSONObject, code_systems: Mapping[str, JSONObject]) -> CodeSet:
    expansion = (value_set.get("expansion") or {}).get("contains")
    if expansion:
        return frozenset(_flatten_expansion(expansion))
    compose = value_set.get("compose") or {}
    codes: set[tuple[str, str]] = set()
    for include in compose.get("include") or ():
        found = _included(include, code_systems)
        if found is None:
            return None
        codes |= found
    for exclude in compose.get("exclude") or ():
        found = _included(exclude, code_systems)
        if found is None:
            return None
        codes -= found
    return frozenset(codes)


def systems_named(value_set: JSONObject) -> set[str]:
    """The CodeSystems a ValueSet includes whole (to be fetched before expanding)."""
    compose = value_set.get("compose") or {}
    return {
        str(part["system"])
        for part in [*(compose.get("include") or ()), *(compose.get("exclude") or ())]
        if part.get("system") and not part.get("concept")
    }


def _included(
    part: JSONObject, code_systems: Mapping[str, JSONObject]
) -> set[tuple[str, str]] | None:
    system = str(part.get("system", ""))
    if part.get("valueSet") or part.get("filter") or not system:
        return None
    if part.get("concept"):
        return {(system, str(c.get("code"))) for c in part["concept"]}
    code_system = code_systems.get(system)
    if code_system is None or code_system.get("content") != "complete":
        return None
    return {(system, code) for code in _codes(code_system.get("concept") or ())}


def _codes(concepts: Iterable[Any]) -> Iterable[str]:
    for concept in concepts:
        yield str(concept.get("code"))
        yield from _codes(concept.get("concept") or ())


def _flatten_expansion(contains: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for entry in contains:
        if entry.get("code"):
            yield str(entry.get("system", "")), str(entry["code"])
        yield from _flatten_expansion(entry.get("contains") or ())
