"""`_summary` and `_elements` (R4 search.html#summary, #elements): subsets of a resource.

A subset is marked with the SUBSETTED tag so that no client mistakes it for the whole.
"""

from __future__ import annotations

from collections.abc import Collection

from fhirserver.errors import BadRequest
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.definitions import ALWAYS_SUMMARY, mandatory_elements, summary_elements

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
# The `_summary` values, in the order search.html#summary lists them (error messages
# name them so). `count` applies to searches only.
SUMMARY_MODES = ("true", "text", "data", "count", "false")


def summarize(resource: JSONObject, mode: str) -> JSONObject:
    """Apply a `_summary` mode other than `count` (which only searches have)."""
    resource_type = resource["resourceType"]
    if mode == "false":
        return resource
    if mode == "true":
        return _subset(resource, summary_elements(resource_type))
    if mode == "text":
        keep = {*ALWAYS_SUMMARY, "text", *mandatory_elements(resource_type)}
        return _subset(resource, keep)
    if mode == "data":
        return _subset(resource, set(resource) - {"text"})
    raise BadRequest(f"Invalid _summary value {mode!r} here", expression="_summary")


def select_elements(resource: JSONObject, elements: Collection[str]) -> JSONObject:
    """Apply `_elements`: the named top-level elements plus the mandatory ones."""
    keep = {*ALWAYS_SUMMARY, *mandatory_elements(resource["resourceType"]), *elements}
    return _subset(resource, keep)


def _subset(resource: JSONObject, keep: Collection[str]) -> JSONObject:
    subset = {
        key: value
        for key, value in resource.items()
        if key in keep or (key.startswith("_") and key[1:] in keep)
    }
    if len(subset) == len(resource):
        return resource
    meta = dict(subset.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    subset["meta"] = meta
    return subset
