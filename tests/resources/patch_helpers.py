"""Shared by the FHIRPath Patch tests (R4 fhirpatch.html): operations written as FHIR
JSON, and a Patient whose names, identifiers and languages paths can pick among."""

from __future__ import annotations

from typing import Any

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.fhirpath_patch import apply_fhirpath_patch


def op(kind: str, path: str, **parts: JSONObject) -> JSONObject:
    """One `operation` parameter; each keyword becomes a part, e.g. value={"valueDate": ...}."""
    return {
        "name": "operation",
        "part": [
            {"name": "type", "valueCode": kind},
            {"name": "path", "valueString": path},
            *({"name": name, **content} for name, content in parts.items()),
        ],
    }


def patch(resource: JSONObject, *operations: JSONObject) -> JSONObject:
    return apply_fhirpath_patch(
        resource, {"resourceType": "Parameters", "parameter": [*operations]}
    )


def patient(**elements: Any) -> JSONObject:
    return {"resourceType": "Patient", **elements}


PETER = patient(
    name=[
        {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
        {"use": "usual", "given": ["Jim"]},
    ],
    identifier=[
        {"system": "urn:a", "value": "1"},
        {"system": "urn:b", "value": "1"},
        {"system": "urn:b", "value": "2"},
    ],
    communication=[
        {"language": {"text": "French"}, "preferred": False},
        {"language": {"text": "English"}, "preferred": True},
    ],
)
