"""The R4 invariants (conformance-rules.html#constraints): each `constraint` of the resource
and data type StructureDefinitions, evaluated with fhirpathpy on every instance of its
context element that the resource has.

The table is derived from the official definitions by scripts/derive_invariants.py and
shipped in derived/invariants.json.gz, keyed by the JSON Schema definition holding the
context (`Observation`, `Observation_ReferenceRange`, `Period`), so a data type's
invariants apply wherever the type is used. A walk over the resource, guided by the
schema's element types, visits only what is present: cost grows with the resource, not
with the 900-odd invariants.

Speed: each expression is compiled once per definition (functools.cache). Most
expressions read a few named children of their context; when the node has none of them
the answer is the one computed once on an empty node, so e.g. the dom-2..dom-5 rules
about `contained` cost nothing on a resource without contained resources.

Native checks, cheaper than FHIRPath and not in the table: `ele-1` (an element has a value
or children other than `id`; the structure check already refuses empty objects and
arrays, this catches `{"id": ...}` alone) and `ext-1` (an extension has either a value or
extensions). Expressions fhirpathpy cannot run (the table marks them `unsupported`) and
evaluations that raise give warnings, never errors.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
import orjson
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

from fhirserver.errors import Issue
from fhirserver.resources.definitions import is_resource_type
from fhirserver.resources.native_invariants import Check, native
from fhirserver.resources.schema import RESOURCE_LIST, choice_keys, elements

# fhirpathpy's node with its FHIR type path, so `value` finds valueQuantity and dates
# compare as dates (fhirpathpy leaves this function untyped).
_typed_node: Callable[[Any, str], Any] = ResourceNode.create_node
TABLE_PATH = Path(__file__).with_name("derived") / "invariants.json.gz"
Evaluator = Callable[..., list[Any]]

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
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
# A function called on the context itself (not after a dot), or a variable that names the
# context or its resource: the expression may read the whole node, so it is never skipped.
_READS_CONTEXT = re.compile(
    r"(?<![.\w`])(?!(?:iif|in|and|or|xor|implies|contains|is|as|div|mod)\b)[A-Za-z_]\w*\s*\("
    r"|%rootResource|%context|\$this"
)
# Identifiers not after a dot: the first steps of paths from the context (and, inside
# where(), from its items: a superset, which only makes skipping rarer).
_FIRST_STEP = re.compile(r"(?<![.\w`])(?:`([^`]*)`|([A-Za-z_][A-Za-z0-9_]*))")


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
    # The node's JSON keys the expression can read; None: it may read the whole node.
    reads: frozenset[str] | None
    # Whether it holds on a node that has none of `reads`.
    holds_when_absent: bool


def missing_functions(expression: str) -> list[str]:
    """Functions the expression calls that fhirpathpy (with our additions) lacks."""
    from fhirpathpy.engine.invocations import invocation_registry

    called = _FUNCTION.findall(_STRING.sub("''", expression))
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
    reads = None if row["element"] else _reads(definition, row["expression"])
    absent = True
    if evaluate is not None and reads is not None:
        absent = holds(run(evaluate, {}, row["path"], {}, {}))
    return Invariant(
        key=row["key"],
        severity=row["severity"],
        human=row["human"],
        expression=row["expression"],
        path=row["path"],
        element=row["element"],
        unsupported=unsupported,
        evaluate=evaluate,
        check=check,
        reads=reads,
        holds_when_absent=absent,
    )


def _reads(definition: str, expression: str) -> frozenset[str] | None:
    """Every key of the definition that a first step of the expression may name, so
    skipping on their absence is safe. `%resource` is the context itself on a resource
    (its paths start with the same names); elsewhere it is another node."""
    text = _STRING.sub("''", expression)
    if _READS_CONTEXT.search(text):
        return None
    if "%resource" in text and not is_resource_type(definition):
        return None
    names = {quoted or plain for quoted, plain in _FIRST_STEP.findall(text)}
    keys: set[str] = set()
    for name in names:
        for key in {name} | choice_keys(definition, name):
            keys.update((key, f"_{key}"))
    return frozenset(keys & elements(definition).keys())


def check_invariants(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """Issues (errors and warnings) for the invariants `resource` breaks or that could
    not be checked; [] when all hold."""
    return list(_check_node(resource_type, resource, resource_type, resource, resource))


def _check_node(
    definition: str, node: dict[str, Any], where: str, resource: Any, root: Any
) -> Iterator[Issue]:
    if definition == "Extension" and ("extension" in node) == any(
        key.startswith("value") for key in node
    ):
        yield Issue(
            "Constraint ext-1 failed: Must have either extensions or value[x], not both",
            "invariant",
            expression=where,
        )
    for invariant in invariants_of(definition):
        if invariant.element is None:
            yield from _check(invariant, node, where, resource, root)
        else:
            for key in {invariant.element} | choice_keys(definition, invariant.element):
                for value, at in _values(node.get(key), f"{where}.{key}"):
                    yield from _check(invariant, value, at, resource, root)
    listed = elements(definition)
    for key, item in node.items():
        element = listed.get(key)
        target = element.definition if element else None
        if target is None:
            continue
        for value, at in _values(item, f"{where}.{key}"):
            if not isinstance(value, dict):
                continue
            if target != RESOURCE_LIST:
                if not value.keys() - {"id"}:
                    yield _ele_1(at)
                    continue
                yield from _check_node(target, value, at, resource, root)
            elif isinstance(kind := value.get("resourceType"), str):
                # A contained resource is its own %resource inside its container's
                # %rootResource; an entry's resource (Bundle, Parameters) is its own root.
                nested_root = root if key == "contained" else value
                yield from _check_node(kind, value, at, value, nested_root)


def _ele_1(where: str) -> Issue:
    return Issue(
        "Constraint ele-1 failed: All FHIR elements must have a @value or children",
        "invariant",
        expression=where,
    )


def _values(item: Any, where: str) -> Iterator[tuple[Any, str]]:
    if isinstance(item, list):
        for index, value in enumerate(item):
            if value is not None:
                yield value, f"{where}[{index}]"
    elif item is not None:
        yield item, where


def _check(
    invariant: Invariant, node: Any, where: str, resource: Any, root: Any
) -> Iterator[Issue]:
    reads = invariant.reads
    if reads is not None and not reads.intersection(node):
        # Unsupported ones are not known to hold here; they are only warned about where
        # the resource has something they read.
        if invariant.evaluate is not None and not invariant.holds_when_absent:
            yield _issue(invariant, where, invariant.severity)
        return
    if invariant.check is not None:
        if not invariant.check(node, resource, root):
            yield _issue(invariant, where, invariant.severity)
        return
    if invariant.evaluate is None:
        yield _issue(invariant, where, "warning", f"not checked: {invariant.unsupported}")
        return
    try:
        result = run(invariant.evaluate, node, invariant.path, resource, root)
    except Exception as exc:  # fhirpathpy raises bare Exceptions on data it cannot handle
        yield _issue(invariant, where, "warning", f"not checked: {str(exc)[:80]}")
        return
    if not holds(result):
        yield _issue(invariant, where, invariant.severity)


def _issue(invariant: Invariant, where: str, severity: str, note: str | None = None) -> Issue:
    text = f"Constraint {invariant.key} failed: {invariant.human}"
    if note is not None:
        text = f"Constraint {invariant.key} {note}: {invariant.human}"
    return Issue(text, "invariant" if note is None else "informational", severity, where)
