"""A profile's snapshot (R4 profiling.html, elementdefinition.html) compiled into a tree.

Only what can fail is kept: an element is a node when the profile narrows its
cardinality (against `base`), fixes or patterns its value, binds it required to a code
set we hold, adds an invariant of its own, slices it, restricts a choice's types, or
has such a node below it. Everything else the core validation already checks, so a
resource walks only a few nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirserver.errors import Unprocessable
from fhirserver.profiles.constraints import Constraint
from fhirserver.resources.codec import JSONObject

# Codes of a required binding as (system, code); None: the ValueSet could not be
# expanded here, so the binding is not checked (and $validate says so).
CodeSet = frozenset[tuple[str, str]] | None
# Where a constraint comes from when the core spec defines it: those run in the core
# validation (resources/invariants.py), not again per profile.
_CORE_SOURCE = "http://hl7.org/fhir/StructureDefinition/"


class ProfileError(Unprocessable):
    """A StructureDefinition that cannot be used as a profile here."""


@dataclass(frozen=True, slots=True)
class Binding:
    value_set: str
    codes: CodeSet


@dataclass(frozen=True, slots=True)
class Slice:
    name: str
    min: int
    max: int | None
    node: Node
    # The values each discriminator path must hold, by path ("coding.code", "$this").
    expected: tuple[tuple[str, str, Any], ...]


@dataclass(frozen=True, slots=True)
class Slicing:
    paths: tuple[tuple[str, str], ...]  # (discriminator type, path)
    closed: bool
    slices: tuple[Slice, ...]


@dataclass(frozen=True, slots=True)
class Node:
    """One element: `name` is its JSON key, or `base[x]` for a choice."""

    name: str
    # The element's path (FHIRPath, choices without [x]) for invariants on primitives.
    path: str = ""
    min: int = 0
    max: int | None = None
    types: tuple[str, ...] = ()
    fixed: Any = None
    pattern: Any = None
    binding: Binding | None = None
    constraints: tuple[Constraint, ...] = ()
    slicing: Slicing | None = None
    children: tuple[Node, ...] = ()
    narrowed_max: bool = False

    @property
    def choice(self) -> bool:
        return self.name.endswith("[x]")


@dataclass(frozen=True, slots=True)
class Profile:
    url: str
    type: str
    root: Node
    # Required bindings whose ValueSet could not be expanded here: not checked.
    unchecked: tuple[str, ...] = ()


def compile_profile(definition: JSONObject, code_sets: Mapping[str, CodeSet]) -> Profile:
    """`code_sets`: the expansions of the ValueSets its required bindings name (by URL
    without version); a missing one is left unchecked."""
    url = str(definition.get("url", ""))
    kind = definition.get("kind")
    if definition.get("resourceType") != "StructureDefinition" or kind != "resource":
        raise ProfileError(f"{url} is not a StructureDefinition of a resource type")
    if definition.get("derivation") != "constraint":
        raise ProfileError(f"{url} is not a profile (derivation must be constraint)")
    elements = (definition.get("snapshot") or {}).get("element") or []
    if not elements:
        raise ProfileError(
            f"{url} has no snapshot: this server does not generate snapshots from a"
            " differential; load the profile with its snapshot"
        )
    by_id = {str(e.get("id") or e.get("path")): e for e in elements}
    root_id = str(elements[0].get("id") or elements[0].get("path"))
    unchecked: list[str] = []
    root = _node(root_id, by_id, code_sets, unchecked) or Node(root_id)
    return Profile(url, str(definition.get("type")), root, tuple(sorted(set(unchecked))))


def _parent(element_id: str) -> str:
    return element_id.rsplit(".", 1)[0] if "." in element_id else ""


def _last(element_id: str) -> str:
    return element_id.rsplit(".", 1)[-1]


def _node(
    element_id: str,
    by_id: Mapping[str, JSONObject],
    code_sets: Mapping[str, CodeSet],
    unchecked: list[str],
) -> Node | None:
    element = by_id[element_id]
    name = _last(element_id).split(":", 1)[0]
    children: list[Node] = []
    for child_id in by_id:
        if _parent(child_id) != element_id or ":" in _last(child_id):
            continue
        child = _node(child_id, by_id, code_sets, unchecked)
        if child is not None:
            children.append(child)
    slicing, type_slices = _slicing(element_id, element, by_id, code_sets, unchecked)
    children.extend(type_slices)
    types = tuple(str(t.get("code")) for t in element.get("type") or ())
    base = element.get("base") or {}
    minimum = int(element.get("min") or 0)
    maximum = _max(element.get("max"))
    narrowed_max = maximum is not None and maximum != _max(base.get("max", "*"))
    binding = _binding(element, code_sets, unchecked)
    constraints = tuple(
        Constraint.of(c)
        for c in element.get("constraint") or ()
        if c.get("expression") and not str(c.get("source", "")).startswith(_CORE_SOURCE)
    )
    fixed = next((v for k, v in element.items() if k.startswith("fixed")), None)
    pattern = next((v for k, v in element.items() if k.startswith("pattern")), None)
    wanted = (
        minimum > int(base.get("min", 0))
        or narrowed_max
        or fixed is not None
        or pattern is not None
        or binding is not None
        or constraints
        or slicing is not None
        or children
        or (name.endswith("[x]") and bool(types))
    )
    if not wanted:
        return None
    return Node(
        name=name,
        path=str(element.get("path", "")).removesuffix("[x]"),
        min=minimum,
        max=maximum,
        types=types,
        fixed=fixed,
        pattern=pattern,
        binding=binding,
        constraints=constraints,
        slicing=slicing,
        children=tuple(children),
        narrowed_max=narrowed_max,
    )


def _max(value: Any) -> int | None:
    return None if value in (None, "*") else int(value)


def _binding(
    element: JSONObject, code_sets: Mapping[str, CodeSet], unchecked: list[str]
) -> Binding | None:
    binding = element.get("binding") or {}
    value_set = str(binding.get("valueSet", "")).split("|", 1)[0]
    if binding.get("strength") != "required" or not value_set:
        return None
    codes = code_sets.get(value_set)
    if codes is None:
        unchecked.append(value_set)
        return None
    return Binding(value_set, codes)


def _slicing(
    element_id: str,
    element: JSONObject,
    by_id: Mapping[str, JSONObject],
    code_sets: Mapping[str, CodeSet],
    unchecked: list[str],
) -> tuple[Slicing | None, list[Node]]:
    """The element's slices, and the type slices of a choice (`value[x]:valueQuantity`)
    as plain children under their JSON key."""
    prefix = element_id + ":"
    slice_ids = [i for i in by_id if i.startswith(prefix) and "." not in i[len(prefix) :]]
    if not slice_ids:
        return None, []
    rules = element.get("slicing") or {}
    paths = tuple(
        (str(d.get("type")), str(d.get("path"))) for d in rules.get("discriminator") or ()
    )
    slices: list[Slice] = []
    typed: list[Node] = []
    base = _last(element_id).removesuffix("[x]")
    for slice_id in slice_ids:
        slice_element = by_id[slice_id]
        name = slice_id[len(prefix) :]
        node = _node(slice_id, by_id, code_sets, unchecked) or Node(name)
        if element_id.endswith("[x]") and name.startswith(base) and name[len(base) :][:1].isupper():
            typed.append(_renamed(node, name, slice_element))
            continue
        expected = tuple(
            (kind, path, value)
            for kind, path in paths
            if (value := _expected(node, slice_element, path)) is not None
        )
        slices.append(
            Slice(
                name,
                int(slice_element.get("min") or 0),
                _max(slice_element.get("max")),
                node,
                expected,
            )
        )
    if not slices:
        return None, typed
    return Slicing(paths, rules.get("rules") == "closed", tuple(slices)), typed


def _renamed(node: Node, key: str, element: JSONObject) -> Node:
    """A type slice of a choice checked as the element under its JSON key."""
    return Node(
        name=key,
        path=node.path,
        min=int(element.get("min") or 0),
        max=_max(element.get("max")),
        fixed=node.fixed,
        pattern=node.pattern,
        binding=node.binding,
        constraints=node.constraints,
        slicing=node.slicing,
        children=node.children,
    )


def _expected(node: Node, element: JSONObject, path: str) -> Any:
    """The value a slice requires at a discriminator path: a fixed or pattern value
    found down its children, or (extensions sliced by url) the profile its type names."""
    if path == "$this":
        return node.fixed if node.fixed is not None else node.pattern
    current: Node | None = node
    for step in path.split("."):
        current = next((c for c in current.children if c.name == step), None) if current else None
    if current is not None and (current.fixed is not None or current.pattern is not None):
        return current.fixed if current.fixed is not None else current.pattern
    if path == "url":
        profiles = [p for t in element.get("type") or () for p in t.get("profile") or ()]
        return profiles[0] if profiles else None
    return None
