"""The R4 invariants (conformance-rules.html#constraints): each `constraint` of the resource
and data type StructureDefinitions, evaluated with fhirpathpy on every instance of its
context element that the resource has.

The table is derived from the official definitions by scripts/derive_invariants.py and
shipped in derived/invariants.json.gz, keyed by the JSON Schema definition holding the
context (`Observation`, `Observation_ReferenceRange`, `Period`), so a data type's
invariants apply wherever the type is used. A walk over the resource, guided by the
schema's element types, visits only what is present: cost grows with the resource, not
with the 900-odd invariants.

Speed (fhirpathpy costs 10-40 µs an evaluation): each expression is compiled once per
definition (functools.cache) and the walk goes down object-valued elements only. Most
answers come without FHIRPath: from the keys a node has (invariant_shortcuts.py: e.g.
dom-2..dom-5 on a resource without `contained`, qty-3, obs-6), or from a native form of
the costliest and commonest (native_invariants.py: dom-3, ref-1, per-1, rng-2).

Checked natively and not in the table: `ele-1` (an element has a value or children other
than `id`; the structure check already refuses empty objects and arrays and nulls, so
this catches `{"id": ...}` alone) and `ext-1` (an extension has either a value or
extensions, not both). Expressions fhirpathpy cannot run (the table marks them
`unsupported`) and evaluations that raise give warnings, never errors.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson
from fhirpathpy.engine.invocations import invocation_registry
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhirserver.errors import Issue
from fhirserver.resources.invariant_shortcuts import STRING_LITERAL, Shortcut, shortcut
from fhirserver.resources.native_invariants import Check, native
from fhirserver.resources.schema import RESOURCE_LIST, choice_keys, elements, primitive_kind

# fhirpathpy's node with its FHIR type path, so `value` finds valueQuantity and dates
# compare as dates (fhirpathpy leaves this function untyped).
_typed_node: Callable[[Any, str], Any] = ResourceNode.create_node
TABLE_PATH = Path(__file__).with_name("derived") / "invariants.json.gz"
Evaluator = Callable[..., list[Any]]

# ele-1 and ext-1 hold for every element and extension: checked natively, not in the table.
_ELE_1 = "All FHIR elements must have a @value or children"
_EXT_1 = "Must have either extensions or value[x], not both"
# Functions the R4 invariants use that fhirpathpy lacks; FHIRPath spec semantics.
_EXTRA_FUNCTIONS: Mapping[str, Mapping[str, Any]] = {
    # hasValue(): one primitive item that has a value (not only extensions).
    "hasValue": {
        "fn": lambda inputs: [
            len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)
        ]
    },
}
_OPTIONS: Mapping[str, Any] = {
    "userInvocationTable": _EXTRA_FUNCTIONS,
    # ref-1 calls trace(); fhirpathpy would print it.
    "traceFn": lambda *_: None,
}
# Keywords, not functions, though `in (...)` looks like a call.
_OPERATORS = frozenset({"in", "and", "or", "xor", "implies", "contains", "is", "as", "div", "mod"})
_AS_FUNCTION = re.compile(r"\.as\(")
_IS_SYSTEM = re.compile(r"\bis (Boolean|String|Integer|Decimal|Date|DateTime|Time)\b")
_FUNCTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


@dataclass(frozen=True, slots=True)
class Invariant:
    key: str
    severity: str
    human: str
    expression: str
    # The FHIR element path of the context (Observation.referenceRange): fhirpathpy's type
    # base, which lets it resolve choice elements and typed comparisons.
    path: str
    # Set when the context is one element of the definition, not the definition itself.
    element: str | None
    unsupported: str | None
    evaluate: Evaluator | None
    # The native form, when there is one (native_invariants.py); used instead of evaluate.
    check: Check | None
    # The keys an element-level context takes (its choice forms: valueString, ...).
    element_keys: tuple[str, ...]
    # Decides from the keys a node has, when it can (invariant_shortcuts.py).
    shortcut: Shortcut | None


def missing_functions(expression: str) -> list[str]:
    """Functions the expression calls that fhirpathpy (with our additions) lacks."""
    called = _FUNCTION.findall(STRING_LITERAL.sub("''", expression))
    known = invocation_registry.keys() | _EXTRA_FUNCTIONS.keys() | _OPERATORS
    return sorted({name for name in called if name not in known})


def compile_expression(expression: str) -> Evaluator:
    evaluator: Evaluator = fhirpathpy.compile(rewrite(expression), models["r4"], dict(_OPTIONS))
    return evaluator


def rewrite(expression: str) -> str:
    """The R4 expressions as the reference validator reads them, in words fhirpathpy
    evaluates the same way:
    - `x.as(T)` over a collection (dom-3 and 400-odd others): fhirpathpy demands a single
      item, so it becomes `x.ofType(T)`, the same filter on any number of items;
    - `is Boolean` (que-7) tests the System type, which a FHIR `boolean` converts to
      implicitly (the official Questionnaire-bb example relies on it); fhirpathpy needs the
      FHIR type name for that.
    """
    expression = _AS_FUNCTION.sub(".ofType(", expression)
    return _IS_SYSTEM.sub(lambda m: f"is {m[1][0].lower()}{m[1][1:]}", expression)


def run(evaluate: Evaluator, node: Any, path: str, resource: Any, root: Any) -> list[Any]:
    """Evaluate on `node`, an instance of element `path`, inside `resource` and `root`."""
    return evaluate(_typed_node(node, path), {"resource": resource, "rootResource": root})


def holds(result: Sequence[Any]) -> bool:
    """An invariant is broken only by `false`. An empty answer is no evidence of a
    violation: R4 expressions such as ras-2 (`probability is decimal implies ...`) and
    bdl-8 (`fullUrl.contains(...).not()`) are empty when their element is absent, and the
    official examples that omit it are valid."""
    return not (len(result) == 1 and result[0] is False)


@cache
def _table() -> Mapping[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = orjson.loads(gzip.decompress(TABLE_PATH.read_bytes()))
    return table


@cache
def invariants_of(definition: str) -> tuple[Invariant, ...]:
    """The compiled invariants whose context is `definition` or one of its elements."""
    return tuple(_compile(definition, row) for row in _table().get(definition, ()))


def _compile(definition: str, row: Mapping[str, Any]) -> Invariant:
    unsupported: str | None = row["unsupported"]
    check = native(row["key"], row["expression"])
    evaluate = None if unsupported or check else compile_expression(row["expression"])
    path = row["path"]
    found = None
    if check is None and row["element"] is None:
        found = shortcut(
            definition,
            row["expression"],
            lambda part: run(compile_expression(part), {}, path, {}, {}),
        )
    return Invariant(
        key=row["key"],
        severity=row["severity"],
        human=row["human"],
        expression=row["expression"],
        path=path,
        element=row["element"],
        unsupported=unsupported,
        evaluate=evaluate,
        check=check,
        element_keys=_element_keys(definition, row["element"]),
        shortcut=found,
    )


def _element_keys(definition: str, element: str | None) -> tuple[str, ...]:
    if element is None:
        return ()
    return tuple(sorted({element} | choice_keys(definition, element)))


def check_invariants(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Issues (errors and warnings) for the invariants `resource` breaks or that could
    not be checked; [] when all hold."""
    issues: list[Issue] = []
    _check_node(resource_type, resource, resource_type, resource, resource, issues)
    return issues


@cache
def _complex_children(definition: str) -> Mapping[str, str]:
    """The keys of a definition that hold objects (complex types, backbone elements,
    resources, primitives' `_x` extension holders), with their definition: the walk's
    only way down; primitive values have no invariants of their own to visit."""
    return {
        key: element.target
        for key, element in elements(definition).items()
        if element.target == RESOURCE_LIST
        or (element.definition is not None and primitive_kind(element.target) is None)
    }


def _check_node(
    definition: str,
    node: dict[str, Any],
    where: str,
    resource: Any,
    root: Any,
    issues: list[Issue],
) -> None:
    if definition == "Extension" and ("extension" in node) == any(
        key.startswith("value") for key in node
    ):
        issues.append(_native_issue("ext-1", _EXT_1, where))
    for invariant in invariants_of(definition):
        if invariant.element is None:
            _check(invariant, node, where, resource, root, issues)
            continue
        for key in invariant.element_keys:
            for value, at in _values(node.get(key), f"{where}.{key}"):
                _check(invariant, value, at, resource, root, issues)
    children = _complex_children(definition)
    for key, item in node.items():
        target = children.get(key)
        if target is None:
            continue
        for value, at in _values(item, f"{where}.{key}"):
            if not isinstance(value, dict):
                continue
            if target != RESOURCE_LIST:
                if not value or (len(value) == 1 and "id" in value):
                    issues.append(_native_issue("ele-1", _ELE_1, at))
                else:
                    _check_node(target, value, at, resource, root, issues)
            elif isinstance(kind := value.get("resourceType"), str):
                # A contained resource is its own %resource inside its container's
                # %rootResource; an entry's resource (Bundle, Parameters) is its own root.
                nested_root = root if key == "contained" else value
                _check_node(kind, value, at, value, nested_root, issues)


def _native_issue(key: str, human: str, where: str) -> Issue:
    return Issue(f"Constraint {key} failed: {human}", "invariant", expression=where)


def _values(item: Any, where: str) -> list[tuple[Any, str]]:
    if isinstance(item, list):
        return [(value, f"{where}[{i}]") for i, value in enumerate(item) if value is not None]
    return [] if item is None else [(item, where)]


def _check(
    invariant: Invariant,
    node: Any,
    where: str,
    resource: Any,
    root: Any,
    issues: list[Issue],
) -> None:
    if invariant.check is not None:
        if not invariant.check(node, resource, root):
            issues.append(_issue(invariant, where, invariant.severity))
        return
    decided = invariant.shortcut.decide(node) if invariant.shortcut is not None else None
    if decided is not None:
        if not decided:
            issues.append(_issue(invariant, where, invariant.severity))
        return
    if invariant.evaluate is None:
        issues.append(_issue(invariant, where, "warning", f"not checked: {invariant.unsupported}"))
        return
    try:
        result = run(invariant.evaluate, node, invariant.path, resource, root)
    except Exception as exc:  # fhirpathpy raises bare Exceptions on data it cannot handle
        issues.append(_issue(invariant, where, "warning", f"not checked: {str(exc)[:80]}"))
        return
    if not holds(result):
        issues.append(_issue(invariant, where, invariant.severity))


def _issue(invariant: Invariant, where: str, severity: str, note: str | None = None) -> Issue:
    text = f"Constraint {invariant.key} failed: {invariant.human}"
    if note is not None:
        text = f"Constraint {invariant.key} {note}: {invariant.human}"
    return Issue(text, "invariant" if note is None else "informational", severity, where)
