"""The SearchParameter registry, loaded from the definitions in searchparams/.

Each parameter's FHIRPath expression is cut down to the parts about one resource type,
rewritten where fhirpathpy cannot run it as written, and compiled once:
- `(X as T)` and `X.as(T)` become `X.ofType(T)` (`as` over several items raises);
- `X.where(resolve() is T)` becomes a test of the reference's type (`T/id`, or an
  absolute URL `.../T/id`), since fhirpathpy has no `resolve()` and an index must not
  fetch other resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhirserver.conformance import load_resources
from fhirserver.errors import BadRequest
from fhirserver.resources.schema import choice_keys, r4_schema

# Parameters of every resource (R4 search.html#all) that are answered from stored
# columns, not from an expression.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
# Parameters whose definitions have no expression, or that need what we do not have.
UNSUPPORTED = {
    "_text": "full-text search on the narrative is not supported",
    "_content": "full-text search on the content is not supported",
    "_query": "named queries are not supported",
    "near": "geographic search (special type) is not supported",
}

_AS_TYPE = re.compile(r"\(([A-Za-z0-9_.]+) as ([A-Za-z]+)\)")
_AS_FUNCTION = re.compile(r"\.as\(([A-Za-z]+)\)")
_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)")

Evaluator = Callable[..., list[Any]]


@dataclass(frozen=True)
class Component:
    definition: str
    expression: str


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    expression: str
    base: tuple[str, ...]
    url: str
    description: str
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()

    def expression_for(self, resource_type: str) -> str | None:
        """The parts of the expression about `resource_type`, rewritten for fhirpathpy."""
        parts = []
        for part in _split_union(self.expression):
            if self.base == ("Resource",) or self.base == ("DomainResource",):
                part = re.sub(r"^(Resource|DomainResource)\.", f"{resource_type}.", part)
            elif part[0].islower():
                # A few official expressions are relative ("name | alias" on InsurancePlan).
                part = f"{resource_type}.{part}"
            head = part.lstrip("(")
            if head == resource_type or head.startswith(resource_type + "."):
                parts.append(part)
        return " | ".join(parts) or None


def rewrite(expression: str) -> str:
    expression = _AS_TYPE.sub(r"\1.ofType(\2)", expression)
    expression = _AS_FUNCTION.sub(r".ofType(\1)", expression)
    return _RESOLVE_IS.sub(
        r".where(reference.startsWith('\1/') or reference.contains('/\1/'))", expression
    )


def _split_union(expression: str) -> list[str]:
    """Top-level `|` alternatives of an expression."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in expression:
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


_STEP = re.compile(
    r"\.(?:ofType\((?P<type>[A-Za-z]+)\)"
    r"|where\(reference\.startsWith\('(?P<target>[A-Za-z]+)/'\)"
    r" or reference\.contains\('/(?P=target)/'\)\)"
    r"|(?P<equals>where\((?P<field>[A-Za-z]+) ?= ?'(?P<literal>[^']*)'\))"
    r"|(?P<name>[A-Za-z]+)(?!\())"
)
Step = tuple[str, str]


@cache
def compile_expression(expression: str, relative: bool = False) -> Evaluator:
    """A fast walk over the JSON for unions of plain paths (most parameters), else
    fhirpathpy. A `relative` expression (a composite's component) starts at an element
    rather than at a resource. tests/search/test_params.py holds the walk to fhirpathpy."""
    expression = rewrite(expression)
    exists = _EXISTS_NOT_FALSE.fullmatch(expression)
    if exists is not None and not relative and (path := _plain_path(exists["path"])):
        return _ExistsNotFalse(_Walker((path,), relative=False))
    parts = [f"Element.{part}" if relative else part for part in _split_union(expression)]
    paths = [_plain_path(part) for part in parts]
    if all(path is not None for path in paths):
        return _Walker(tuple(p for p in paths if p is not None), relative)
    return slow_expression(expression)


# Patient.deceased (`Patient.deceased.exists() and Patient.deceased != false`), the one
# official expression of this shape: fhirpathpy ran it for every Patient written, about
# 4% of a create's CPU.
_EXISTS_NOT_FALSE = re.compile(r"(?P<path>[A-Za-z.]+)\.exists\(\) and (?P=path) != false")


class _ExistsNotFalse:
    """`X.exists() and X != false`: a single boolean, true when X holds anything but a
    lone false (FHIRPath: an empty X makes `exists()` false; a lone false makes the
    comparison false; any other X differs from false)."""

    def __init__(self, path: _Walker) -> None:
        self.path = path

    def __call__(self, resource: Any, *_: Any) -> list[Any]:
        values = self.path(resource)
        return [bool(values) and not (len(values) == 1 and values[0] is False)]


def slow_expression(expression: str) -> Evaluator:
    evaluator: Evaluator = fhirpathpy.compile(expression, models["r4"])
    return evaluator


def _plain_path(part: str) -> tuple[str, tuple[Step, ...]] | None:
    """`Type.a.b`, with `.ofType(T)`, `.where(field='text')` and the rewritten
    `.where(reference...)` reference-type steps."""
    head = re.match(r"[A-Za-z]+", part)
    if head is None:
        return None
    steps: list[Step] = []
    position = head.end()
    while position < len(part):
        step = _STEP.match(part, position)
        if step is None:
            return None
        kind = step.lastgroup
        assert kind is not None
        value = f"{step.group('field')}={step.group('literal')}" if kind == "equals" else None
        steps.append((kind, value or step.group(kind)))
        position = step.end()
    return head.group(), tuple(steps)


class _Walker:
    """Evaluates plain paths on FHIR JSON as FHIRPath would: lists flatten, and a name
    also finds its choice forms (`value` finds `valueQuantity`)."""

    def __init__(self, paths: tuple[tuple[str, tuple[Step, ...]], ...], relative: bool) -> None:
        self.paths = paths
        self.relative = relative
        self.first_names = None if relative else _first_names(paths)

    def __call__(self, resource: Any, *_: Any) -> list[Any]:
        found: list[Any] = []
        for resource_type, steps in self.paths:
            if not self.relative and resource.get("resourceType") != resource_type:
                continue
            items: list[tuple[str, Any]] = [("", resource)]
            for kind, value in steps:
                items = _step(items, kind, value)
                if not items:
                    # Most parameters of a type find nothing in a given resource, most
                    # often at the first step: the steps after it have nothing to do.
                    break
            found.extend(item for _, item in items)
        return found


def _first_names(paths: tuple[tuple[str, tuple[Step, ...]], ...]) -> frozenset[str] | None:
    """The keys of a resource's JSON that the paths start from (a name and its choice
    forms): a resource with none of them yields nothing. None: a path needs no key."""
    names: set[str] = set()
    for _, steps in paths:
        if not steps or steps[0][0] != "name":
            return None
        names.add(steps[0][1])
        names.update(_choice_forms(steps[0][1]))
    return frozenset(names)


@cache
def _choice_keys() -> frozenset[tuple[str, str]]:
    """(element, JSON name) for every form of every choice element in R4, such as
    ("value", "valueQuantity"), as `resources.schema.choice_keys` tells them apart in
    each definition: `subscriberId` is no form of `subscriber`, which exists, and
    `statusDate` no form of `status`, which MedicinalProductAuthorization has."""
    definitions = r4_schema()["definitions"]
    types = {name[0].upper() + name[1:] for name in definitions if "_" not in name}
    found: set[tuple[str, str]] = set()
    for definition, details in definitions.items():
        keys = details.get("properties", {})
        bases = {key[:cut] for key in keys for cut in range(1, len(key)) if key[cut:] in types}
        for base in bases:
            found.update((base, key) for key in choice_keys(definition, base))
    return frozenset(found)


@cache
def _choice_forms(name: str) -> frozenset[str]:
    """The JSON names of the choice forms of element `name` anywhere in R4 (most names
    have none: then only the name itself is looked for)."""
    return frozenset(key for base, key in _choice_keys() if base == name)


def _step(items: list[tuple[str, Any]], kind: str, value: str) -> list[tuple[str, Any]]:
    """Each item is (the JSON key it came from, the value)."""
    out: list[tuple[str, Any]] = []
    if kind == "name":
        forms = _choice_forms(value)
        for _, node in items:
            if not isinstance(node, dict):
                continue
            # An element and choice forms of the same name never stand side by side.
            if value in node:
                keys = [value]
            elif forms:
                keys = [k for k in node if k in forms]
            else:
                continue
            for key in keys:
                child = node[key]
                out.extend((key, c) for c in (child if isinstance(child, list) else [child]))
    elif kind == "type":
        suffix = value[0].upper() + value[1:]
        out = [(key, node) for key, node in items if key.endswith(suffix)]
    elif kind == "equals":
        # .where(system='phone'): elements whose field holds that string.
        field, _, literal = value.partition("=")
        out = [
            (key, node)
            for key, node in items
            if isinstance(node, dict) and node.get(field) == literal
        ]
    else:
        for key, node in items:
            reference = node.get("reference", "") if isinstance(node, dict) else ""
            if isinstance(reference, str) and (
                reference.startswith(value + "/") or f"/{value}/" in reference
            ):
                out.append((key, node))
    return out


class _Extraction:
    """A type's indexed parameters, found for a resource by the keys its JSON has: a
    parameter whose paths all start from a key the resource lacks finds nothing. Of a
    Synthea resource's 37 parameters (on average) 24 are left to evaluate."""

    def __init__(self, indexed: tuple[tuple[SearchParam, Evaluator], ...]) -> None:
        self.indexed = indexed
        by_key: dict[str, list[int]] = {}
        always: list[int] = []
        for position, (_, evaluate) in enumerate(indexed):
            names = evaluate.first_names if isinstance(evaluate, _Walker) else None
            if names is None:
                always.append(position)
            for name in names or ():
                by_key.setdefault(name, []).append(position)
        self.by_key = {key: tuple(positions) for key, positions in by_key.items()}
        self.always = frozenset(always)

    def applicable(self, resource: dict[str, Any]) -> list[tuple[SearchParam, Evaluator]]:
        """The parameters that may find a value in `resource`, in the order of `indexed`."""
        chosen = set(self.always)
        for key in resource:
            positions = self.by_key.get(key)
            if positions is not None:
                chosen.update(positions)
        return [self.indexed[position] for position in sorted(chosen)]


class Registry:
    def __init__(self, params: list[SearchParam]) -> None:
        self.params = tuple(params)
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._by_url = {param.url: param for param in params}
        for param in params:
            for base in param.base:
                self._by_type.setdefault(base, {})[param.code] = param

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.for_type(resource_type).get(code)

    def shared(self, resource_types: tuple[str, ...], code: str) -> SearchParam | None:
        """The definition of `code` when every one of the types has one (the first's):
        a system search may use only the parameters all its types share."""
        found = [self.get(t, code) for t in resource_types]
        if not found or any(p is None for p in found):
            return None
        return found[0]

    def by_url(self, url: str) -> SearchParam | None:
        return self._by_url.get(url)

    @cache  # noqa: B019 - one registry lives for the whole process
    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """Every parameter that applies to `resource_type`, by code."""
        return {
            **self._by_type.get("Resource", {}),
            **self._by_type.get("DomainResource", {}),
            **self._by_type.get(resource_type, {}),
        }

    @cache  # noqa: B019
    def indexed(self, resource_type: str) -> tuple[tuple[SearchParam, Evaluator], ...]:
        """The parameters extracted at write time for `resource_type`, compiled."""
        found = []
        for code, param in sorted(self.for_type(resource_type).items()):
            if code in COLUMN_PARAMS or code in UNSUPPORTED or param.type == "special":
                continue
            expression = param.expression_for(resource_type)
            if expression is not None:
                found.append((param, compile_expression(expression)))
        return tuple(found)

    @cache  # noqa: B019
    def extraction(self, resource_type: str) -> _Extraction:
        return _Extraction(self.indexed(resource_type))


def bad_modifier(name: str, modifier: str, kind: str) -> BadRequest:
    """A modifier that parameters of `kind` do not take (search.html#modifiers)."""
    return BadRequest(f"Modifier :{modifier} does not apply to a {kind} parameter", expression=name)


def search_param(resource: dict[str, Any]) -> SearchParam:
    """A SearchParameter resource as the registry holds it."""
    return SearchParam(
        code=resource["code"],
        type=resource["type"],
        expression=resource.get("expression", ""),
        base=tuple(resource.get("base", ())),
        url=resource.get("url", ""),
        description=resource.get("description", ""),
        targets=tuple(resource.get("target", ())),
        components=tuple(
            Component(c["definition"], c["expression"]) for c in resource.get("component", ())
        ),
    )


@cache
def registry() -> Registry:
    """The shipped definitions (searchparams/): what every search and index uses unless
    an app passes its own (`joined`)."""
    return Registry(
        [
            search_param(resource)
            for resource in load_resources("searchparams")
            if resource.get("resourceType") == "SearchParameter"
        ]
    )


class SearchParameters:
    """The registry one app searches and indexes with: the shipped one until its store
    is open, then the shipped one joined by the SearchParameters stored there (an
    Implementation Guide's). One per app, handed to every read and write; nothing global."""

    def __init__(self, current: Registry | None = None) -> None:
        self.current = current or registry()


def joined(extra: list[dict[str, Any]]) -> Registry:
    """The shipped definitions and `extra` SearchParameter resources (an Implementation
    Guide's, stored by `fhirserver ig load`); an extra one with the code of a shipped
    one on the same type replaces it there. The shipped registry itself when there is
    nothing to add, so its compiled caches are shared."""
    usable = [
        search_param(resource)
        for resource in extra
        if resource.get("resourceType") == "SearchParameter"
        and isinstance(resource.get("code"), str)
        and isinstance(resource.get("type"), str)
        and resource.get("base")
    ]
    if not usable:
        return registry()
    return Registry([*registry().params, *usable])


@cache
def patient_compartment() -> dict[str, tuple[str, ...]]:
    """For each resource type, the parameters that put it in a Patient's compartment."""
    for resource in load_resources("capability"):
        if resource.get("resourceType") == "CompartmentDefinition" and resource.get("code") == (
            "Patient"
        ):
            return {
                entry["code"]: tuple(entry["param"])
                for entry in resource.get("resource", ())
                if entry.get("param")
            }
    return {}
