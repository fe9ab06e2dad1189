"""Validate an incoming resource as R4 (4.0.1).

One walk (structure.py) checks elements, JSON kinds, primitive formats, required
elements and choice groups against the official R4 JSON Schema and StructureDefinitions;
resource types fhir.resources' R4B models lack or reshaped (R4-only types) are also
checked against the JSON Schema itself, as before. A failure names the offending element
as a FHIRPath `expression`.
Then the R4 invariants (invariants.py) of severity error.
Status (R4 http.html): 400 when the content cannot be parsed as the resource (unknown
element, wrong type, bad primitive); 422 when it parses but breaks a rule such as a
required element, a required terminology binding (bindings.py) or an invariant.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import jsonschema

from fhirserver.errors import BadRequest, FHIRError, Issue, Unprocessable
from fhirserver.resources.bindings import check_bindings
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.definitions import is_resource_type, r4b_model
from fhirserver.resources.invariants import check_invariants
from fhirserver.resources.schema import r4_schema
from fhirserver.resources.structure import check_structure

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Rules a well-formed resource can break (R4 http.html: 422, not 400).
_RULE_CODES = frozenset({"required", "code-invalid"})
_MAX_MESSAGE = 300
_MAX_ISSUES = 20


def check_resource_type(resource: JSONObject, expected: str | None) -> str:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("Resource has no resourceType", expression="resourceType")
    if not is_resource_type(resource_type):
        raise BadRequest(
            f"Unknown resource type {resource_type!r}: not an R4 resource",
            expression="resourceType",
        )
    if expected is not None and resource_type != expected:
        raise BadRequest(
            f"resourceType {resource_type!r} does not match the URL's type {expected!r}",
            expression="resourceType",
        )
    return resource_type


def validate(resource: JSONObject, expected_type: str | None = None) -> str:
    """Check `resource` is a valid R4 resource (of `expected_type`); return its type."""
    resource_type = check_resource_type(resource, expected_type)
    structure = check_structure(resource_type, resource)
    issues = structure.issues[:_MAX_ISSUES]
    if not issues and (structure.needs_schema or r4b_model(resource_type) is None):
        issues = _schema_issues(resource_type, resource)
    if not issues:
        # Terminology only once the structure holds: a binding judges well-formed values.
        issues = check_bindings(resource_type, resource)[:_MAX_ISSUES]
    if issues:
        raise _failure(issues)
    # Invariants last: they assume the structure is sound. Warnings never refuse a write.
    broken = [i for i in check_invariants(resource_type, resource) if i.severity == "error"]
    if broken:
        raise _failure(broken[:_MAX_ISSUES], Unprocessable)
    return resource_type


def expression(resource_type: str, path: Iterable[Any]) -> str:
    text = resource_type
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and _NAME.match(part):
            text += "." + (f"_{part[:-5]}" if part.endswith("__ext") else part)
    return text


@cache
def _schema_validator(resource_type: str) -> jsonschema.Draft6Validator:
    root = {"$ref": f"#/definitions/{resource_type}", "definitions": r4_schema()["definitions"]}
    return jsonschema.Draft6Validator(root)


def _schema_issues(resource_type: str, resource: JSONObject) -> list[Issue]:
    errors: Sequence[jsonschema.ValidationError] = sorted(
        _schema_validator(resource_type).iter_errors(resource), key=lambda e: list(e.path)
    )
    return [
        Issue(
            _trim(error.message),
            code="required" if error.validator == "required" else "structure",
            expression=expression(resource_type, error.absolute_path),
        )
        for error in errors[:_MAX_ISSUES]
    ]


def _failure(issues: list[Issue], error_class: type[FHIRError] | None = None) -> FHIRError:
    summary = "; ".join(f"{i.expression}: {i.diagnostics}" for i in issues[:3])
    if error_class is None:
        error_class = Unprocessable if all(i.code in _RULE_CODES for i in issues) else BadRequest
    return error_class(f"Invalid resource: {summary}", issues=issues)


def _trim(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 1] + "…"
