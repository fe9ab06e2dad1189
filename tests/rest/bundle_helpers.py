"""Builders for the Bundles and patches the batch, transaction and patch tests send."""

from __future__ import annotations

from typing import Any

# The identifier system of the test patients.
SYS = "urn:example:mrn"


def patient(value: str, **extra: Any) -> dict[str, Any]:
    """A Patient with identifier SYS|value."""
    return {"resourceType": "Patient", "identifier": [{"system": SYS, "value": value}], **extra}


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    """A Bundle entry; `request` holds ifMatch, ifNoneExist and the like."""
    built: dict[str, Any] = {}
    if full_url is not None:
        built["fullUrl"] = full_url
    if resource is not None:
        built["resource"] = resource
    built["request"] = {"method": method, "url": url, **request}
    return built


def fhirpath_replace(path: str, **value: Any) -> dict[str, Any]:
    """A FHIRPath Patch (fhirpatch.html) of one replace: `value` is one value[x],
    e.g. valueDate="1990-05-17"."""
    (key, given), *_ = value.items()
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": path},
                    {"name": "value", key: given},
                ],
            }
        ],
    }
