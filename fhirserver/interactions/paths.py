"""The RESTful URL grammar under a FHIR base (R4 http.html#general), parsed once.

The REST router and the Bundle processor both read request paths through this, so
that `Patient/1/_history/2` means the same thing in a URL and in a Bundle entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fhirserver.errors import NotFound
from fhirserver.resources.definitions import is_resource_type

Kind = Literal[
    "system",
    "metadata",
    "system-history",
    "system-search",
    "type",
    "type-history",
    "type-search",
    "instance",
    "instance-history",
    "version",
    "compartment",
    "instance-operation",
    "system-operation",
    "type-operation",
]

_SYSTEM: dict[str, Kind] = {
    "metadata": "metadata",
    "_history": "system-history",
    "_search": "system-search",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What a path names. For a compartment search, `resource_type` / `id` are the
    compartment and its owner, and `member_type` the type searched in it."""

    kind: Kind
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    member_type: str | None = None
    # The operation's code, without the `$`, for a system, type or instance operation.
    operation: str | None = None


def parse_path(path: str) -> Target:
    """`path` is relative to the base, without a query: `Patient/1/_history`."""
    segments = [segment for segment in path.split("/") if segment]
    if not segments:
        return Target("system")
    head, rest = segments[0], segments[1:]
    if head in _SYSTEM and not rest:
        return Target(_SYSTEM[head])
    if _operation(head) and not rest:
        return Target("system-operation", operation=head[1:])
    if not is_resource_type(head):
        raise NotFound(f"Unknown resource type or path {head!r}")
    match rest:
        case []:
            return Target("type", head)
        case ["_history"]:
            return Target("type-history", head)
        case ["_search"]:
            return Target("type-search", head)
        case [operation] if _operation(operation):
            return Target("type-operation", head, operation=operation[1:])
        case [resource_id]:
            return Target("instance", head, resource_id)
        case [resource_id, "_history"]:
            return Target("instance-history", head, resource_id)
        case [resource_id, "_history", version]:
            return Target("version", head, resource_id, version)
        case [resource_id, operation] if _operation(operation):
            return Target("instance-operation", head, resource_id, operation=operation[1:])
        case [resource_id, member_type] if is_resource_type(member_type):
            return Target("compartment", head, resource_id, member_type=member_type)
    raise NotFound(f"No FHIR interaction lives at {path!r}")


def _operation(segment: str) -> bool:
    """`$code` (R4 operations.html#executing)."""
    return segment.startswith("$") and len(segment) > 1
