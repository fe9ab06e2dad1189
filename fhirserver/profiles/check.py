"""Validate a resource against a compiled profile (R4 validation.html#profile,
profiling.html): cardinality along element paths (every repetition of a repeating
parent), fixed and pattern values, the allowed types of a choice, slices found by
their value / pattern discriminators with their own cardinality and content, required
bindings the profile's ValueSets expand to, and the profile's own invariants.

Each failure is an Issue whose `expression` names the element and whose text names
the profile, the slice, the ValueSet or the constraint key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhirserver.errors import Issue
from fhirserver.profiles.constraints import NotEvaluable, holds
from fhirserver.profiles.matching import contains_pattern, discriminated, equals_fixed
from fhirserver.profiles.model import Binding, Node, Profile, Slicing
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.schema import r4_schema


@cache
def _type_names() -> frozenset[str]:
    """Every R4 type name, lowercased: the suffixes of choice keys (valueQuantity)."""
    return frozenset(name.lower() for name in r4_schema()["definitions"] if "_" not in name)


def check_profile(profile: Profile, resource: JSONObject) -> list[Issue]:
    """Every way `resource` breaks `profile` (errors), and the invariants that could
    not be evaluated (warnings)."""
    walk = _Walk(profile, resource)
    if resource.get("resourceType") != profile.type:
        walk.fail(
            profile.type,
            f"is a {resource.get('resourceType')}, but the profile constrains {profile.type}",
            "invalid",
        )
        return walk.issues
    walk.item(profile.root, resource, profile.type)
    return walk.issues


@dataclass
class _Walk:
    profile: Profile
    resource: JSONObject
    issues: list[Issue] = field(default_factory=list)

    def fail(self, where: str, text: str, code: str, severity: str = "error") -> None:
        self.issues.append(
            Issue(f"{where} {text} (profile {self.profile.url})", code, severity, where)
        )

    def item(self, node: Node, value: Any, where: str) -> None:
        if node.fixed is not None and not equals_fixed(value, node.fixed):
            self.fail(where, f"must be exactly {_show(node.fixed)}", "value")
        if node.pattern is not None and not contains_pattern(value, node.pattern):
            self.fail(where, f"must match the pattern {_show(node.pattern)}", "value")
        if node.binding is not None and not _bound(value, node.binding):
            self.fail(
                where,
                f"has a code outside the required ValueSet {node.binding.value_set}",
                "code-invalid",
            )
        for constraint in node.constraints:
            try:
                if holds(constraint, value, self.resource, node.path):
                    continue
            except NotEvaluable as exc:
                self.fail(
                    where,
                    f"constraint {constraint.key} could not be evaluated: {exc}",
                    "informational",
                    "warning",
                )
                continue
            severity = "error" if constraint.severity == "error" else "warning"
            self.fail(
                where,
                f"breaks constraint {constraint.key}: {constraint.human}",
                "invariant",
                severity,
            )
        if isinstance(value, dict):
            for child in node.children:
                if not (node.choice and _typed(node, child)):
                    self.child(child, value, where)

    def child(self, node: Node, parent: JSONObject, where: str) -> None:
        found = (
            _choice_items(self, node, parent, where) if node.choice else _items(node, parent, where)
        )
        # A primitive given by its extensions alone (`_birthDate`) is present too.
        present = len(found) or int(f"_{node.name}" in parent)
        label = f"{where}.{node.name.removesuffix('[x]')}"
        if present < node.min:
            self.fail(label, f"is required {node.min} time(s), found {present}", "required")
        if node.max is not None and present > node.max:
            self.fail(label, f"is allowed at most {node.max} time(s), found {present}", "structure")
        for value, at in found:
            self.item(node, value, at)
            if node.choice:
                # A choice's children are its type slices (value[x]:valueQuantity), each
                # under its own JSON key.
                key = at.rsplit(".", 1)[-1]
                for typed in node.children:
                    if _typed(node, typed) and typed.name == key:
                        self.item(typed, value, at)
        if node.slicing is not None:
            self.slices(node.slicing, found, label)

    def slices(self, slicing: Slicing, found: list[tuple[Any, str]], label: str) -> None:
        counts = dict.fromkeys((s.name for s in slicing.slices), 0)
        for value, at in found:
            matched = [
                s
                for s in slicing.slices
                if s.expected and all(discriminated(value, *e) for e in s.expected)
            ]
            for slice_ in matched:
                counts[slice_.name] += 1
                self.item(slice_.node, value, at)
            if not matched and slicing.closed:
                self.fail(at, "matches none of the slices and the slicing is closed", "structure")
        for slice_ in slicing.slices:
            if not slice_.expected:
                continue  # no discriminator value to recognise it by: not checked
            count = counts[slice_.name]
            if count < slice_.min:
                self.fail(
                    label,
                    f"needs slice {slice_.name} {slice_.min} time(s), found {count}",
                    "required",
                )
            if slice_.max is not None and count > slice_.max:
                self.fail(
                    label,
                    f"allows slice {slice_.name} at most {slice_.max} time(s), found {count}",
                    "structure",
                )


def _typed(choice: Node, child: Node) -> bool:
    """Whether `child` is a type slice of the choice (valueQuantity of value[x])."""
    base = choice.name.removesuffix("[x]")
    return child.name.startswith(base) and child.name[len(base) :][:1].isupper()


def _items(node: Node, parent: JSONObject, where: str) -> list[tuple[Any, str]]:
    raw = parent.get(node.name)
    if isinstance(raw, list):
        return [(v, f"{where}.{node.name}[{i}]") for i, v in enumerate(raw) if v is not None]
    return [] if raw is None else [(raw, f"{where}.{node.name}")]


def _choice_items(walk: _Walk, node: Node, parent: JSONObject, where: str) -> list[tuple[Any, str]]:
    base = node.name.removesuffix("[x]")
    allowed = {t.lower() for t in node.types}
    found = []
    for key, value in parent.items():
        suffix = key[len(base) :]
        if (
            not key.startswith(base)
            or not suffix[:1].isupper()
            or suffix.lower() not in _type_names()
        ):
            continue
        if allowed and suffix.lower() not in allowed:
            walk.fail(
                f"{where}.{key}",
                f"has type {suffix}; the profile allows {', '.join(node.types)}",
                "structure",
            )
        found.append((value, f"{where}.{key}"))
    return found


def _bound(value: Any, binding: Binding) -> bool:
    """Whether a code, Coding, CodeableConcept or Quantity is in the bound codes."""
    codes = binding.codes or frozenset()
    if isinstance(value, str):
        return any(code == value for _, code in codes)
    if not isinstance(value, dict):
        return True
    codings = value.get("coding") if "coding" in value else [value]
    pairs = [
        (str(c.get("system", "")), str(c.get("code", "")))
        for c in codings or ()
        if isinstance(c, dict) and "code" in c
    ]
    # A CodeableConcept with text only carries no code to check.
    return not pairs or any(pair in codes for pair in pairs)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else str(value)
    return text if len(text) <= 120 else text[:119] + "…"
