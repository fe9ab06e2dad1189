"""R4 JSON structure, checked against the official R4 JSON Schema before any model runs.

fhir.resources' R4B models are lax where R4 JSON is strict (json.html): they coerce
as pydantic does ("yes" becomes true, "5" becomes 5), accept R4B-only elements and
types, `fhir_comments`, empty objects and arrays, and nulls. This walk enforces, for
every element at any depth, including contained and nested resources:
- the element exists in R4;
- a primitive has its JSON kind (boolean, number, whole number, string);
- objects and arrays are not empty, and null only holds a place in a primitive array
  whose `_element` twin carries the extension for it;
- a nested resource names an R4 resource type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fhirserver.errors import Issue
from fhirserver.resources.definitions import is_resource_type, r4b_model
from fhirserver.resources.schema import RESOURCE_LIST, elements, primitive_kind

# Whether a JSON value has each primitive kind (bool is an int in Python, not in JSON).
_KIND_CHECKS: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "boolean": lambda v: isinstance(v, bool),
        "decimal": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
    }
)


@dataclass
class StructureReport:
    issues: list[Issue] = field(default_factory=list)
    # Nested resource types the R4B models cannot check (R4-only or reshaped in R4B).
    needs_schema: bool = False


def check_structure(resource_type: str, resource: dict[str, Any]) -> StructureReport:
    report = StructureReport()
    _check_object(resource_type, resource, resource_type, report)
    return report


def _check_object(
    definition: str, value: dict[str, Any], path: str, report: StructureReport
) -> None:
    listed = elements(definition)
    for name, item in value.items():
        where = f"{path}.{name}"
        element = listed.get(name)
        if element is None:
            report.issues.append(Issue("Unknown element in R4", "structure", expression=where))
            continue
        is_array, target = element.is_array, element.target
        if item is None:
            report.issues.append(Issue("null is not a value", "structure", expression=where))
        elif not is_array:
            _check_value(target, item, where, report)
        elif not isinstance(item, list):
            report.issues.append(Issue("must be a JSON array", "structure", expression=where))
        elif not item:
            report.issues.append(Issue("an array may not be empty", "structure", expression=where))
        else:
            twin = name[1:] if name.startswith("_") else f"_{name}"
            for index, element in enumerate(item):
                if element is not None:
                    _check_value(target, element, f"{where}[{index}]", report)
                elif twin not in value:
                    report.issues.append(
                        Issue(
                            f"null only holds a place for an entry of {twin}",
                            "structure",
                            expression=f"{where}[{index}]",
                        )
                    )


def _check_value(target: str, value: Any, path: str, report: StructureReport) -> None:
    if target == RESOURCE_LIST:
        _check_resource(value, path, report)
        return
    kind = primitive_kind(target) if target not in _KIND_CHECKS else target
    if kind is None:
        if not isinstance(value, dict):
            report.issues.append(
                Issue(f"must be a JSON object ({target})", "structure", expression=path)
            )
        elif not value:
            report.issues.append(Issue("an object may not be empty", "structure", expression=path))
        else:
            _check_object(target, value, path, report)
    elif not _KIND_CHECKS[kind](value):
        wanted = "a whole number" if kind == "integer" else f"a JSON {kind}"
        report.issues.append(
            Issue(f"must be {wanted} ({target}), not {value!r:.40}", "structure", expression=path)
        )


def _check_resource(value: Any, path: str, report: StructureReport) -> None:
    kind = value.get("resourceType") if isinstance(value, dict) else None
    if not isinstance(kind, str) or not is_resource_type(kind):
        report.issues.append(
            Issue("must be a resource with an R4 resourceType", "structure", expression=path)
        )
        return
    if r4b_model(kind) is None:
        report.needs_schema = True
    _check_object(kind, value, path, report)
