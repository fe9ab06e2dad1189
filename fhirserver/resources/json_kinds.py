"""JSON value kinds per element, from the R4 JSON Schema.

fhir.resources coerces as pydantic does in lax mode ("yes" becomes true, "5" becomes
5), while FHIR JSON requires a boolean to be a JSON boolean and a number a JSON number
(R4 json.html#primitive). This walk checks the kind of every primitive before the
models see the resource.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhirserver.errors import Issue
from fhirserver.resources.definitions import is_resource_type, r4_schema

_RESOURCE = "ResourceList"
# What a value of each schema primitive may be in JSON (bool is an int in Python).
_KIND_CHECKS = {
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
}
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})


@cache
def _plan(definition: str) -> dict[str, tuple[bool, str]]:
    """For each property of a complex definition: (is it an array, the target definition)."""
    properties = r4_schema()["definitions"][definition].get("properties", {})
    plan = {}
    for name, schema in properties.items():
        is_array = schema.get("type") == "array"
        target = schema.get("items", {}) if is_array else schema
        ref = target.get("$ref")
        plan[name] = (is_array, ref.rsplit("/", 1)[1] if ref else _inline_kind(target))
    return plan


def _inline_kind(schema: dict[str, Any]) -> str:
    """Choice elements (valueBoolean, ...) spell their primitive inline, not as a $ref."""
    json_type = schema.get("type", "string")
    if json_type == "number" and "\\." not in schema.get("pattern", "\\."):
        return "integer"
    return {"boolean": "boolean", "number": "decimal"}.get(json_type, "string")


def kind_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    issues: list[Issue] = []
    _check_object(resource_type, resource, resource_type, issues)
    return issues


def _check_object(definition: str, value: dict[str, Any], path: str, issues: list[Issue]) -> None:
    plan = _plan(definition)
    for name, item in value.items():
        entry = plan.get(name)
        if entry is None:
            continue  # unknown elements are the models' to report
        is_array, target = entry
        where = f"{path}.{name}"
        if is_array:
            if not isinstance(item, list):
                issues.append(Issue("must be a JSON array", "structure", expression=where))
                continue
            for index, element in enumerate(item):
                # null holds a place in a primitive array paired with its _element array.
                if element is not None:
                    _check_value(target, element, f"{where}[{index}]", issues)
        else:
            _check_value(target, item, where, issues)


def _check_value(target: str, value: Any, path: str, issues: list[Issue]) -> None:
    if target == _RESOURCE:
        kind = value.get("resourceType") if isinstance(value, dict) else None
        if isinstance(kind, str) and is_resource_type(kind):
            _check_object(kind, value, path, issues)
        return
    definition = r4_schema()["definitions"][target]
    if "properties" in definition:
        if isinstance(value, dict):
            _check_object(target, value, path, issues)
        else:
            issues.append(Issue(f"must be a JSON object ({target})", "structure", expression=path))
        return
    json_type = definition.get("type", "string")
    check = _KIND_CHECKS.get(json_type)
    if check is None:
        return
    if not check(value) or (target in _INTEGER_TYPES and not isinstance(value, int)):
        wanted = "a whole number" if target in _INTEGER_TYPES else f"a JSON {json_type}"
        issues.append(
            Issue(f"must be {wanted} ({target}), not {value!r:.40}", "structure", expression=path)
        )
