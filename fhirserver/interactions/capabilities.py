"""The CapabilityStatement (R4 http.html#capabilities): capability/ plus what is implemented.

The interaction lists here are the truth the router is built against: nothing is
advertised that answers 501.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from fhirserver import FHIR_VERSION, __version__
from fhirserver.conformance import load_resources
from fhirserver.interactions.lastn import DEFINITION as LASTN_DEFINITION
from fhirserver.interactions.operations import instance_operations
from fhirserver.interactions.validate_op import DEFINITION as VALIDATE_DEFINITION
from fhirserver.resources.definitions import resource_types
from fhirserver.resources.meta import format_instant
from fhirserver.search.params import Registry, registry

TYPE_INTERACTIONS = (
    "search-type",
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
)
SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system", "search-system")
# What search.html#all defines for every resource, answered from columns.
_COLUMN_PARAMS = (
    ("_id", "token", "Logical id of the resource"),
    ("_lastUpdated", "date", "When the resource version last changed"),
)


# Bulk Data Access IG 2.0.0: its OperationDefinitions, by canonical URL (export.html),
# and the CapabilityStatement a server that exports instantiates.
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
SYSTEM_OPERATIONS = ({"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/export"},)
TYPE_OPERATIONS = {
    "Patient": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/patient-export"},
    "Group": {"name": "export", "definition": f"{BULK_DATA}/OperationDefinition/group-export"},
    "Observation": {"name": "lastn", "definition": LASTN_DEFINITION},
}

RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


@dataclass(frozen=True)
class OAuthUris:
    """Where a SMART client authorizes (SMART App Launch 2.2 conformance.html, "Using
    the CapabilityStatement"); None for an endpoint the issuer does not offer."""

    authorize: str | None
    token: str | None
    introspect: str | None = None
    revoke: str | None = None
    # external: the outside issuer, not this server, hands out tokens.
    description: str = "OAuth2 using the SMART App Launch profile; bearer tokens required"


def security(oauth: OAuthUris) -> dict[str, Any]:
    """`rest.security` when authorization is on: the SMART-on-FHIR service coding and
    the oauth-uris extension. `cors` stays false: this server sends no CORS headers."""
    uris = (
        ("authorize", oauth.authorize),
        ("token", oauth.token),
        ("introspect", oauth.introspect),
        ("revoke", oauth.revoke),
    )
    return {
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [{"url": name, "valueUri": uri} for name, uri in uris if uri],
            }
        ],
        "cors": False,
        "service": [
            {
                "coding": [
                    {
                        "system": RESTFUL_SECURITY_SERVICE,
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }
        ],
        "description": oauth.description,
    }


@cache
def _base() -> dict[str, Any]:
    for resource in load_resources("capability"):
        if resource.get("resourceType") == "CapabilityStatement":
            return resource
    raise RuntimeError("capability/ holds no CapabilityStatement")


def capability_statement(
    base_url: str, now: datetime, oauth: OAuthUris | None = None, known: Registry | None = None
) -> dict[str, Any]:
    """`oauth`: the authorization endpoints when authorization is on (smart or
    external mode); None leaves the "no authorization" security of capability/.
    `known`: the search parameters (the app's; default: the shipped ones)."""
    statement = copy.deepcopy(_base())
    statement["date"] = format_instant(now)
    statement["fhirVersion"] = FHIR_VERSION
    statement["software"] = {"name": "fhirserver", "version": __version__}
    statement["implementation"] = {"description": "fhirserver", "url": base_url}
    rest = statement["rest"][0]
    rest["resource"] = [
        _with_topics(r) if r["type"] == "Subscription" else r
        for r in _resources(known or registry())
    ]
    rest["interaction"] = [{"code": code} for code in SYSTEM_INTERACTIONS]
    rest["operation"] = [dict(op) for op in SYSTEM_OPERATIONS]
    statement["instantiates"] = [f"{BULK_DATA}/CapabilityStatement/bulk-data"]
    rest["searchParam"] = [
        {"name": name, "type": kind, "documentation": text} for name, kind, text in _COLUMN_PARAMS
    ]
    if oauth is not None:
        rest["security"] = security(oauth)
    return statement


# Backport IG 1.1.0 "Capability Statements": the topics a server supports are listed on
# its Subscription resource entry, one extension each, and the entry names the
# backport-subscription profile.
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
TOPIC_CANONICAL = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
BACKPORT_SUBSCRIPTION = f"{BACKPORT}/StructureDefinition/backport-subscription"
_TOPIC_URL = "/StructureDefinition/extension-SubscriptionTopic.url"


@cache
def topic_canonicals() -> tuple[str, ...]:
    """The canonical URLs of the SubscriptionTopics shipped in extensions/ (Basic
    resources; fhirserver.subscriptions.topics parses them whole, but that layer sits
    above this one, so the URLs are read here)."""
    return tuple(
        sorted(
            str(ext["valueUri"])
            for resource in load_resources("extensions")
            if resource.get("resourceType") == "Basic"
            for ext in resource.get("extension", ())
            if str(ext.get("url", "")).endswith(_TOPIC_URL)
        )
    )


# Backport IG 1.1.0 Capabilities.fsh (backport-subscription-server-r4): the Subscription
# entry lists $status (SHALL), $events and $get-ws-binding-token (MAY) by the IG's
# OperationDefinition canonicals (Operations.fsh). The IG defines no capability
# extension for channel types, so the channels served (rest-hook, websocket) are not
# advertised here; README "Subscriptions" names them.
SUBSCRIPTION_OPERATIONS = (
    ("status", f"{BACKPORT}/OperationDefinition/backport-subscription-status"),
    ("events", f"{BACKPORT}/OperationDefinition/backport-subscription-events"),
    (
        "get-ws-binding-token",
        f"{BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token",
    ),
)
_BACKPORT_NAMES = frozenset(name for name, _ in SUBSCRIPTION_OPERATIONS)


def _with_topics(entry: dict[str, Any]) -> dict[str, Any]:
    listed = [op for op in entry.get("operation", ()) if op["name"] not in _BACKPORT_NAMES]
    return {
        **entry,
        "extension": [
            {"url": TOPIC_CANONICAL, "valueCanonical": url} for url in topic_canonicals()
        ],
        "supportedProfile": [BACKPORT_SUBSCRIPTION],
        "operation": [
            *listed,
            *({"name": name, "definition": url} for name, url in SUBSCRIPTION_OPERATIONS),
        ],
    }


def search_params(resource_type: str, known: Registry) -> list[dict[str, Any]]:
    """Every parameter the search of `resource_type` understands, with its definition."""
    params = [
        {"name": name, "type": kind, "documentation": text} for name, kind, text in _COLUMN_PARAMS
    ]
    for param, _ in known.indexed(resource_type):
        params.append(
            {
                "name": param.code,
                "definition": param.url,
                "type": param.type,
                "documentation": param.description,
            }
        )
    return params


def _reference_params(known: Registry, resource_type: str) -> list[str]:
    return [p.code for p, _ in known.indexed(resource_type) if p.type == "reference"]


@cache
def _resources(known: Registry) -> list[dict[str, Any]]:
    # Built once per registry (one for the process's life, or per app): about 1.3 MB,
    # dominated by the reverse-include lists.
    return [_resource(known, name) for name in resource_types()]


def _targets(known: Registry, source: str, code: str) -> tuple[str, ...]:
    param = known.get(source, code)
    return param.targets if param is not None else ()


def _resource(known: Registry, resource_type: str) -> dict[str, Any]:
    refs = _reference_params(known, resource_type)
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
        "searchInclude": ["*", *(f"{resource_type}:{code}" for code in refs)],
        **_rev_includes(known, resource_type),
        "searchParam": search_params(resource_type, known),
        **_operations(resource_type),
    }


def _operations(resource_type: str) -> dict[str, list[dict[str, str]]]:
    found = [
        {"name": str(op["code"]), "definition": str(op["url"])}
        for op in instance_operations(resource_type)
    ]
    if resource_type in TYPE_OPERATIONS:
        found.append(dict(TYPE_OPERATIONS[resource_type]))
    # R4 resource-operation-validate.html: $validate on every type.
    found.append({"name": "validate", "definition": VALIDATE_DEFINITION})
    return {"operation": found} if found else {}


def _rev_includes(known: Registry, resource_type: str) -> dict[str, list[str]]:
    found = sorted(
        f"{source}:{code}"
        for source in resource_types()
        for code in _reference_params(known, source)
        if resource_type in _targets(known, source, code)
    )
    return {"searchRevInclude": found} if found else {}
