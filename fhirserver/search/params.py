"""The SearchParameter registry, loaded from the definitions in searchparams/.

Each parameter's FHIRPath expression is cut down to the parts about one resource type,
rewritten where fhirpathpy cannot run it as written, and compiled once:
- `(X as T)` and `X.as(T)` become `X.ofType(T)` (`as` over several items raises);
- `X.where(resolve() is T)` becomes a test of the reference's type prefix, since
  fhirpathpy has no `resolve()` and a search index must not fetch other resources.
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
            head = part.lstrip("(")
            if head == resource_type or head.startswith(resource_type + "."):
                parts.append(rewrite(part))
        return " | ".join(parts) or None


def rewrite(expression: str) -> str:
    expression = _AS_TYPE.sub(r"\1.ofType(\2)", expression)
    expression = _AS_FUNCTION.sub(r".ofType(\1)", expression)
    return _RESOLVE_IS.sub(r".where(reference.startsWith('\1/'))", expression)


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


@cache
def compile_expression(expression: str) -> Evaluator:
    evaluator: Evaluator = fhirpathpy.compile(expression, models["r4"])
    return evaluator


class Registry:
    def __init__(self, params: list[SearchParam]) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {}
        self._by_url = {param.url: param for param in params}
        for param in params:
            for base in param.base:
                self._by_type.setdefault(base, {})[param.code] = param

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self.for_type(resource_type).get(code)

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


@cache
def registry() -> Registry:
    params = [
        SearchParam(
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
        for resource in load_resources("searchparams")
        if resource.get("resourceType") == "SearchParameter"
    ]
    return Registry(params)


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
