"""A refused access as an R4 AuditEvent, in the shape of IHE Basic Audit Log Patterns
(BALP 1.1, "Basic AuditEvent for a failed RESTful interaction"): type
`audit-event-type#rest`, subtype the RESTful interaction, outcome 4 (minor failure), the
client and user as agents, this server as the source. The token itself never goes in:
its id (`jti`) names it.
"""

from __future__ import annotations

from datetime import datetime

from fhirserver.auth.access import Access
from fhirserver.auth.audit import APPLICATION, SOURCE_TYPE
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant

_EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "RESTful Operation",
}
_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
# R4 AuditEvent.action by HTTP method (BALP: C create, R read/search, U update, D delete,
# E an operation).
_ACTIONS = {"GET": "R", "HEAD": "R", "POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}
_NETWORK_IP = "2"  # R4 AuditEvent.agent.network.type: IP address


def refusal_event(
    at: datetime,
    method: str,
    interaction: str,
    path: str,
    reason: str,
    access: Access | None,
    address: str | None,
) -> JSONObject:
    """An AuditEvent for a request refused with 401 or 403. `interaction`: the R4
    restful-interaction code (`read`, `search-type`, `create`, ...); `path`: the request
    path under the FHIR base, without its query (which may hold personal data);
    `access`: who asked, when the token was valid."""
    client: JSONObject = {
        "type": {"coding": [APPLICATION]},
        "who": {"display": (access.client_id if access and access.client_id else "unknown")},
        "requestor": access is None or access.user is None,
    }
    if address:
        client["network"] = {"address": address, "type": _NETWORK_IP}
    agents = [client]
    if access is not None and access.user:
        agents.append({"who": {"reference": access.user}, "requestor": True})
    entity: JSONObject = {"what": {"display": path}}
    if access is not None and access.token_id:
        entity = {**entity, "name": f"token {access.token_id}"}
    return {
        "resourceType": "AuditEvent",
        "type": _EVENT_TYPE,
        "subtype": [{"system": _INTERACTION_SYSTEM, "code": interaction}],
        "action": _ACTIONS.get(method, "E"),
        "recorded": format_instant(at),
        "outcome": "4",
        "outcomeDesc": reason,
        "agent": agents,
        "source": {"observer": {"display": "fhirserver"}, "type": [SOURCE_TYPE]},
        "entity": [entity],
    }
