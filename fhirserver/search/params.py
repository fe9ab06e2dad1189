"""The SearchParameter registry, loaded from the definitions in searchparams/."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from fhirserver.conformance import load_resources

_SIMPLE_PATH = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)+$")


@dataclass(frozen=True)
class SearchParam:
    code: str
    type: str
    expression: str
    base: tuple[str, ...]
    url: str
    description: str

    def paths(self, resource_type: str) -> tuple[tuple[str, ...], ...]:
        """Element paths inside `resource_type` for the plain dotted parts of the expression."""
        paths = []
        for part in self.expression.split("|"):
            part = part.strip()
            if _SIMPLE_PATH.match(part) and part.startswith(resource_type + "."):
                paths.append(tuple(part.split(".")[1:]))
        return tuple(paths)


class Registry:
    def __init__(self, params: list[SearchParam]) -> None:
        self._by_type: dict[tuple[str, str], SearchParam] = {}
        for param in params:
            for base in param.base:
                self._by_type[(base, param.code)] = param

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        return self._by_type.get((resource_type, code)) or self._by_type.get(("Resource", code))


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
        )
        for resource in load_resources("searchparams")
        if resource.get("resourceType") == "SearchParameter"
    ]
    return Registry(params)
