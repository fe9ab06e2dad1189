"""AuditEvents for the token endpoint, in the shape of IHE Basic Audit Log Patterns
(BALP) and IHE IUA's "Get Access Token" [ITI-71] record: one for each token issued
and one for each refused token request.

type DCM 110114 "User Authentication", subtype ITI-71 "Get Access Token"; action E
(execute); `recorded` from the clock; outcome 0 (success) or 4 (minor failure: the
request was refused), with the fixed refusal phrase in `outcomeDesc`. Agents: the
client (an application, identified by its client_id) and, when there is one, the
user (their fhirUser reference); the caller's network address. Source: this server.
Entity: the token's id (`jti`) as a system object, never the token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fhirserver.resources.meta import format_instant

DCM = "http://dicom.nema.org/resources/ontology/DCM"
_TYPE = {"system": DCM, "code": "110114", "display": "User Authentication"}
_SUBTYPE = {"system": "urn:ihe:event-type-code", "code": "ITI-71", "display": "Get Access Token"}
APPLICATION = {"system": DCM, "code": "110150", "display": "Application"}
HUMAN_USER = {
    "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
    "code": "humanuser",
    "display": "human user",
}
SOURCE_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
    "code": "4",
    "display": "Application Server",
}
_SYSTEM_OBJECT = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "code": "2",
    "display": "System Object",
}
SUCCESS, REFUSED = "0", "4"


def token_audit_event(
    *,
    at: datetime,
    issuer: str,
    grant_type: str,
    client_id: str | None,
    address: str | None,
    user: str | None = None,
    token_id: str | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    """The AuditEvent of one token request; `refusal` (an OAuth error code and fixed
    description) when it was refused."""
    client: dict[str, Any] = {
        "type": {"coding": [APPLICATION]},
        "who": (
            {"identifier": {"system": issuer, "value": client_id}}
            if client_id
            else {"display": "unidentified client"}
        ),
        "requestor": user is None,
    }
    if address:
        # AuditEvent.agent.network.type 2: an IP address.
        client["network"] = {"address": address, "type": "2"}
    agents = [client]
    if user is not None:
        agents.append(
            {"type": {"coding": [HUMAN_USER]}, "who": {"reference": user}, "requestor": True}
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _TYPE,
        "subtype": [_SUBTYPE],
        "action": "E",
        "recorded": format_instant(at),
        "outcome": REFUSED if refusal else SUCCESS,
        "agent": agents,
        "source": {"observer": {"display": f"fhirserver ({issuer})"}, "type": [SOURCE_TYPE]},
        "entity": [
            {
                "type": _SYSTEM_OBJECT,
                "name": f"grant_type={grant_type or 'none'}",
                **(
                    {"what": {"identifier": {"system": f"{issuer}/token", "value": token_id}}}
                    if token_id
                    else {}
                ),
            }
        ],
    }
    if refusal:
        event["outcomeDesc"] = refusal
    return event
