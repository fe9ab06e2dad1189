"""What the server knows about each R4 resource type.

The list of types and the structure of those that fhir.resources' R4B models do not
describe faithfully come from the official R4 JSON Schema (`schema.py`). Everything
else comes from the R4B models.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from fhirserver.resources.schema import r4_schema

# R4B (4.3.0) rebuilt these two resources with different elements; their R4B models
# would reject valid R4 content, so they are validated against the R4 schema instead.
RESTRUCTURED_IN_R4B = frozenset({"Evidence", "EvidenceVariable"})

# Always part of a summary (R4 search.html#summary): the resource's identity.
ALWAYS_SUMMARY = ("resourceType", "id", "meta")


@cache
def resource_types() -> tuple[str, ...]:
    """All 146 R4 resource types, sorted."""
    return tuple(sorted(r4_schema()["discriminator"]["mapping"]))


@cache
def _type_set() -> frozenset[str]:
    return frozenset(resource_types())


def is_resource_type(name: str) -> bool:
    return name in _type_set()


@cache
def r4b_model(resource_type: str) -> Any | None:
    """The R4B model class for an R4 type, or None where R4B lacks or reshaped it."""
    if resource_type in RESTRUCTURED_IN_R4B:
        return None
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return None


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """JSON names of the elements marked isSummary for the type."""
    model = r4b_model(resource_type)
    if model is None:
        # The R4 schema does not mark summary elements: fall back to the mandatory ones.
        return frozenset(ALWAYS_SUMMARY) | mandatory_elements(resource_type)
    names = set(ALWAYS_SUMMARY)
    for field_name in model.summary_elements_sequence():
        info = model.model_fields.get(field_name)
        names.add(info.alias if info is not None and info.alias else field_name)
    return frozenset(names)


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements with a minimum cardinality of 1, per the R4 schema."""
    definition = r4_schema()["definitions"].get(resource_type, {})
    required = set(definition.get("required", ())) - {"resourceType"}
    # The schema leaves required primitives (Observation.status) out; the models know them.
    model = r4b_model(resource_type)
    if model is not None:
        for name, info in model.model_fields.items():
            if (info.json_schema_extra or {}).get("element_required"):
                required.add(info.alias or name)
    return frozenset(required)
