"""Validate an incoming resource as R4 (4.0.1).

R4B models (fhir.resources) check structure, types and primitive formats; types R4B
lacks or reshaped are checked against the official R4 JSON Schema. Either way a
failure names the offending element as a FHIRPath `expression`.
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
from pydantic import ValidationError

from fhirserver.errors import BadRequest, FHIRError, Issue, Unprocessable
from fhirserver.resources.bindings import check_bindings
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.definitions import is_resource_type, r4b_model
from fhirserver.resources.invariants import check_invariants
from fhirserver.resources.schema import r4_schema
from fhirserver.resources.structure import check_structure

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING_TYPES = frozenset({"missing", "model_field_validation.missing"})
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
    model = r4b_model(resource_type)
    structure = check_structure(resource_type, resource)
    issues = structure.issues
    if not issues:
        if model is None or structure.needs_schema:
            issues = _schema_issues(resource_type, resource)
        else:
            issues = _model_issues(model, resource_type, resource)
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


def _model_issues(model: Any, resource_type: str, resource: JSONObject) -> list[Issue]:
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            Issue(
                _trim(error["msg"]),
                code="required" if error["type"] in _MISSING_TYPES else "structure",
                expression=expression(resource_type, error["loc"]),
            )
            for error in exc.errors(include_url=False)[:_MAX_ISSUES]
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # fhir.resources raises plain errors from some of its own validators.
        return [Issue(_trim(str(exc)), code="structure", expression=resource_type)]
    return []


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
