"""Patch bodies (R4 http.html#patch): JSON Patch (RFC 6902) and FHIRPath Patch
(R4 fhirpatch.html), and, an extension to R4 that clients such as fhirpy send, JSON
Merge Patch (RFC 7396). Each is checked when the request is read and applied later,
inside the write's unit of work, to the current version.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from fhirserver.errors import BadRequest, FHIRError, Unprocessable
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.fhirpath_patch import apply_fhirpath_patch
from fhirserver.resources.validate import validate

# Applies a patch to a resource's JSON: the result, or Unprocessable. Each kind is a
# small class holding its document, not a closure: a transaction run again starts from
# a copy of its entries (interactions/transaction.py), and the copy of a FHIRPath Patch
# must hold the copy of its Parameters, whose references resolution rewrites.
Patcher = Callable[[JSONObject], Any]

_JSON_PATCH = "application/json-patch+json"


def json_patch(operations: Any) -> Patcher:
    """A JSON Patch document (RFC 6902), checked now and applied later."""
    if not isinstance(operations, list):
        raise BadRequest("A JSON Patch document must be a JSON array of operations")
    try:
        jsonpatch.JsonPatch(operations)
    except (jsonpatch.InvalidJsonPatch, jsonpointer.JsonPointerException, TypeError) as exc:
        raise BadRequest(f"Invalid JSON Patch document: {exc}") from None
    return JsonPatch(operations)


@dataclass(frozen=True, slots=True)
class JsonPatch:
    operations: list[Any]

    def __call__(self, resource: JSONObject) -> Any:
        try:
            return jsonpatch.JsonPatch(self.operations).apply(resource)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise Unprocessable(f"The patch cannot be applied: {exc}") from None


def merge_patch(document: Any) -> Patcher:
    """A JSON Merge Patch (RFC 7396): a JSON object, checked now and applied later."""
    if not isinstance(document, dict):
        raise BadRequest("A JSON Merge Patch must be a JSON object")
    return MergePatch(document)


@dataclass(frozen=True, slots=True)
class MergePatch:
    document: JSONObject

    def __call__(self, resource: JSONObject) -> Any:
        return _merged(resource, self.document)


def _merged(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, MergePatch(Target, Patch): an object patch merges member by
    member, null removing a member; anything else replaces the target whole (arrays
    too). A few lines, so written here rather than taken as a dependency."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = _merged(merged.get(name), value)
    return merged


def fhirpath_patch(parameters: JSONObject) -> Patcher:
    """A FHIRPath Patch (R4 fhirpatch.html): a Parameters resource, checked now."""
    validate(parameters, "Parameters")
    return FhirPathPatch(parameters)


@dataclass(frozen=True, slots=True)
class FhirPathPatch:
    parameters: JSONObject

    def __call__(self, resource: JSONObject) -> Any:
        return apply_fhirpath_patch(resource, self.parameters)


def entry_patcher(resource: Any) -> Patcher:
    """A PATCH Bundle entry's resource: a Binary holding a JSON Patch, or a Parameters
    holding a FHIRPath Patch (R4 http.html#patch)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        if resource.get("contentType") != _JSON_PATCH:
            raise BadRequest(
                f"A Binary patch must have contentType {_JSON_PATCH}",
                expression="resource.contentType",
            )
        try:
            operations = codec.loads(_base64(resource.get("data")))
        except FHIRError as exc:
            raise BadRequest(f"The Binary's data is not JSON: {exc}") from None
        return json_patch(operations)
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return fhirpath_patch(resource)
    raise BadRequest(
        "A PATCH entry needs a Binary (JSON Patch) or Parameters (FHIRPath Patch) resource",
        expression="resource",
    )


def _base64(data: Any) -> bytes:
    if not isinstance(data, str):
        raise BadRequest("The Binary has no data", expression="resource.data")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise BadRequest("The Binary's data is not base64", expression="resource.data") from None
