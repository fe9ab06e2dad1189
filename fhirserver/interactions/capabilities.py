"""The CapabilityStatement (R4 http.html#capabilities): capability/ plus what is implemented.

The interaction lists here are the truth the router is built against: nothing is
advertised that answers 501.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from fhirserver import FHIR_VERSION, __version__
from fhirserver.conformance import load_resources
from fhirserver.resources.definitions import resource_types
from fhirserver.resources.meta import format_instant, now

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
)
SYSTEM_INTERACTIONS = ("history-system",)


@cache
def _base() -> dict[str, Any]:
    for resource in load_resources("capability"):
        if resource.get("resourceType") == "CapabilityStatement":
            return resource
    raise RuntimeError("capability/ holds no CapabilityStatement")


def capability_statement(base_url: str) -> dict[str, Any]:
    statement = copy.deepcopy(_base())
    statement["date"] = format_instant(now())
    statement["fhirVersion"] = FHIR_VERSION
    statement["software"] = {"name": "fhirserver", "version": __version__}
    statement["implementation"] = {"description": "fhirserver", "url": base_url}
    rest = statement["rest"][0]
    rest["resource"] = [_resource(name) for name in resource_types()]
    rest["interaction"] = [{"code": code} for code in SYSTEM_INTERACTIONS]
    return statement


def _resource(resource_type: str) -> dict[str, Any]:
    return {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
    }
