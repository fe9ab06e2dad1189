"""Terminology bindings of R4 elements, checked against the expanded core ValueSets.

R4 terminologies.html#binding: a `required` binding means the value SHALL be from the
ValueSet: a code is one of its codes, a Coding one of its (system, code) pairs, a
CodeableConcept has at least one such Coding (text alone does not do), a Quantity's
coded unit is one of them. `extensible` and `preferred` bindings are advice: a value
outside them is a warning, for $validate. `example` bindings say nothing.

derived/bindings.json.gz lists, per resource, data type and backbone element, each
JSON key that holds a complex value or carries a binding. From it one tree per use is
compiled once: only keys on a path to a binding that can be judged (its ValueSet is
expandable here) are kept, so a check walks just what the resource has along those
paths. A data type's bindings (ContactPoint.system) apply wherever the type is used;
contained resources and Bundle entries are checked as their own types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhirserver.errors import Issue
from fhirserver.resources.derived import load
from fhirserver.resources.valuesets import Expansion, expand

# The slot definition that holds a whole resource: its resourceType names the real one.
_RESOURCE = "Resource"
# The FHIR types a binding constrains here (R4 terminologies.html#binding also allows
# string and uri, whose bindings the core definitions leave to preferred or example).
_CODED = frozenset({"code", "Coding", "CodeableConcept", "Quantity"})
_ENFORCED = frozenset({"required"})
_ADVISED = frozenset({"extensible", "preferred"})


@dataclass(frozen=True, slots=True)
class Slot:
    """One JSON key of a definition on the way to a binding."""

    kind: str  # the FHIR type its values have: code, CodeableConcept, HumanName...
    holds: str | None  # the definition to walk into; None for a primitive
    strength: str | None = None
    expansion: Expansion | None = None


Tree = Mapping[str, Mapping[str, Slot]]


def check_bindings(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Errors for each value outside the ValueSet of a required binding."""
    return issues_in(_tree(_ENFORCED), resource_type, resource, "error")


def binding_warnings(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Warnings for each value outside an extensible or preferred binding's ValueSet."""
    return issues_in(_tree(_ADVISED), resource_type, resource, "warning")


def issues_in(
    tree: Tree, resource_type: str, resource: dict[str, Any], severity: str
) -> list[Issue]:
    """An issue of `severity` for each bound value of the resource outside its ValueSet."""
    found: list[Issue] = []
    _walk(_Walk(tree, severity, found), resource_type, resource, resource_type)
    return found


@dataclass(frozen=True, slots=True)
class _Walk:
    tree: Tree
    severity: str
    found: list[Issue]


def _walk(walk: _Walk, definition: str, value: dict[str, Any], path: str) -> None:
    slots = walk.tree.get(definition)
    if not slots:
        return
    # The resource's own keys, not the tree's: an absent element costs nothing.
    for key, item in value.items():
        slot = slots.get(key)
        if slot is None:
            continue
        if isinstance(item, list):
            for index, entry in enumerate(item):
                if entry is not None:
                    _visit(walk, slot, entry, path, key, index)
        else:
            _visit(walk, slot, item, path, key, None)


def _visit(walk: _Walk, slot: Slot, value: Any, path: str, key: str, index: int | None) -> None:
    # The element's FHIRPath is spelt out only where it is needed: most values pass.
    if slot.expansion is not None:
        problem = _problem(slot.kind, value, slot.expansion)
        if problem is not None:
            text = f"{problem}: not in the ValueSet {slot.expansion.url} ({slot.strength} binding)"
            where = _where(path, key, index)
            walk.found.append(Issue(text, "code-invalid", walk.severity, where))
    if slot.holds is None or not isinstance(value, dict):
        return
    definition = value.get("resourceType") if slot.holds == _RESOURCE else slot.holds
    if isinstance(definition, str) and definition in walk.tree:
        _walk(walk, definition, value, _where(path, key, index))


def _where(path: str, key: str, index: int | None) -> str:
    return f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"


def _problem(kind: str, value: Any, expansion: Expansion) -> str | None:
    """What is wrong with a bound value, or None when it is in the ValueSet.

    A value of the wrong shape is the structure check's business, not this one's.
    """
    if kind == "code":
        if isinstance(value, str) and not expansion.has_code(value):
            return f"code {value!r:.60}"
        return None
    if not isinstance(value, dict):
        return None
    if kind == "CodeableConcept":
        codings = [c for c in value.get("coding", ()) if isinstance(c, dict)]
        if any(_coding_in(coding, expansion) for coding in codings):
            return None
        if not codings:
            return "no coding (text alone does not meet a binding)"
        return "none of its codings " + ", ".join(_show(c) for c in codings[:3])
    if kind == "Quantity" and "code" not in value and "system" not in value:
        return None  # a unit given as text only: no coded unit to judge
    if _coding_in(value, expansion):
        return None
    return f"{kind} {_show(value)}"


def _coding_in(coding: dict[str, Any], expansion: Expansion) -> bool:
    system, code = coding.get("system"), coding.get("code")
    return isinstance(system, str) and isinstance(code, str) and expansion.has_coding(system, code)


def _show(coding: dict[str, Any]) -> str:
    return f"{coding.get('system', '(no system)')}|{coding.get('code', '(no code)')}"


@cache
def _tree(strengths: frozenset[str]) -> Tree:
    return compile_tree(load("bindings.json.gz")["definitions"], strengths)


def compile_tree(table: Mapping[str, Mapping[str, list[Any]]], strengths: frozenset[str]) -> Tree:
    """A binding table (as derived/bindings.json.gz holds it) pruned to the keys that
    lead to a binding of these strengths whose ValueSet is expandable."""
    bound: dict[str, dict[str, Slot]] = {}
    walks: dict[str, dict[str, Slot]] = {}
    for definition, keys in table.items():
        for key, (holds, kind, strength, value_set) in keys.items():
            expansion = None
            if strength in strengths and kind in _CODED and value_set:
                expansion = expand(value_set)
            slot = Slot(kind, holds, strength if expansion else None, expansion)
            if expansion is not None:
                bound.setdefault(definition, {})[key] = slot
            elif holds is not None:
                walks.setdefault(definition, {})[key] = slot
    # Keep a walk into a definition only if a binding lies somewhere below it.
    reaching = set(bound)
    changed = True
    while changed:
        changed = False
        for definition, slots in walks.items():
            if definition in reaching:
                continue
            if any(_reaches(slot.holds, reaching) for slot in slots.values()):
                reaching.add(definition)
                changed = True
    tree: dict[str, dict[str, Slot]] = {}
    for definition in reaching:
        kept = {k: s for k, s in walks.get(definition, {}).items() if _reaches(s.holds, reaching)}
        tree[definition] = {**kept, **bound.get(definition, {})}
    return tree


def _reaches(holds: str | None, reaching: set[str]) -> bool:
    # Any resource can sit in a Resource slot; nearly every one carries a binding.
    return holds == _RESOURCE or holds in reaching
