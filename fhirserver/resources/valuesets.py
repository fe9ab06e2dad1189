"""The R4 core ValueSets, expanded, and the CodeSystem hierarchies they were built from.

R4 valueset.html#compose and terminologies.html#binding. scripts/derive_terminology.py
expands every ValueSet of the definitions it can from their CodeSystems (include,
exclude, imported ValueSets, the filters the core ValueSets use) into
derived/valuesets.json.gz; a ValueSet drawn from a terminology the definitions do not
carry (SNOMED CT, LOINC, UCUM, MIME types...) is listed there as not expandable, and
`expand` gives None for it: the server cannot tell its members, so it does not judge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from fhirserver.resources.derived import load


@dataclass(frozen=True, slots=True)
class Expansion:
    url: str
    codings: frozenset[tuple[str, str]]
    # Codes alone, for `code` elements, which carry no system.
    codes: frozenset[str]

    def has_code(self, code: str) -> bool:
        return code in self.codes

    def has_coding(self, system: str, code: str) -> bool:
        return (system, code) in self.codings


def expand(url: str) -> Expansion | None:
    """The codes of a ValueSet canonical (any |version ignored); None if not expandable."""
    canonical = url.split("|", 1)[0]
    if canonical not in load("valuesets.json.gz")["expansions"]:
        return None
    return _expansion(canonical)


# Cached by shipped canonical only, so its size is bounded by the definitions: `url`
# comes from clients too (`code:in=...`), and caching every URL asked for let one
# client grow the server's memory without bound (issue 20 point 8).
@cache
def _expansion(canonical: str) -> Expansion:
    by_system: Mapping[str, list[str]] = load("valuesets.json.gz")["expansions"][canonical]
    codings = frozenset((system, code) for system, codes in by_system.items() for code in codes)
    return Expansion(canonical, codings, frozenset(code for _, code in codings))


def not_expandable() -> Mapping[str, str]:
    """Each ValueSet of the definitions that cannot be expanded here, with the reason."""
    found: Mapping[str, str] = load("valuesets.json.gz")["not_expandable"]
    return found


@cache
def _children(system: str) -> Mapping[str, tuple[str, ...]]:
    parents: Mapping[str, list[str]] = load("codesystems.json.gz")["parents"].get(system, {})
    children: dict[str, list[str]] = {}
    for child, its_parents in parents.items():
        for parent in its_parents:
            children.setdefault(parent, []).append(child)
    return {parent: tuple(found) for parent, found in children.items()}


def parents(system: str, code: str) -> tuple[str, ...]:
    """The codes that directly subsume `code` in a hierarchical CodeSystem."""
    found: list[str] = load("codesystems.json.gz")["parents"].get(system, {}).get(code, [])
    return tuple(found)


def descendants(system: str, code: str) -> frozenset[str]:
    """Every code `code` subsumes in `system` (R4 codesystem.html#hierarchy), not itself."""
    children = _children(system)
    found: set[str] = set()
    stack = [code]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return frozenset(found)


def ancestors(system: str, code: str) -> frozenset[str]:
    """Every code that subsumes `code` in `system`, not itself."""
    found: set[str] = set()
    stack = [code]
    while stack:
        for parent in parents(system, stack.pop()):
            if parent not in found:
                found.add(parent)
                stack.append(parent)
    return frozenset(found)


# The code systems the R4 definitions carry whole: HL7's own. Other systems (SNOMED CT,
# LOINC ...) appear in expansions only as the few codes a ValueSet lists.
_CARRIED = ("http://hl7.org/fhir/", "http://terminology.hl7.org/CodeSystem/")


@cache
def known_systems() -> frozenset[str]:
    """The code systems whose whole content the server knows (for subsumption)."""
    expansions: Mapping[str, Mapping[str, list[str]]] = load("valuesets.json.gz")["expansions"]
    hierarchies: Mapping[str, object] = load("codesystems.json.gz")["parents"]
    drawn = {system for found in expansions.values() for system in found}
    return frozenset(s for s in drawn if s.startswith(_CARRIED)) | frozenset(hierarchies)
