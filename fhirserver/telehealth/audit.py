"""The events of a virtual visit as R4 AuditEvents (R4 auditevent.html): FHIR resources
that any client can search, not a side table.

Every one has type `telehealth-event#virtual-visit` and one subtype from the same code
system (extensions/CodeSystem-telehealth-event.json); its entities are the Appointment,
the Encounter once it exists and the patient; its agent is the person the event is about,
where known. A webhook delivery is one more entity, named `{provider}:{delivery id}`, so
a delivery replayed is recognised (`AuditEvent?entity-name:exact=`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.telehealth.virtual_service import BASE_URL

EVENT_SYSTEM = f"{BASE_URL}/CodeSystem/telehealth-event"
#: DocumentReference.type of a visit's recording (the same code system).
VISIT_RECORDING = {
    "system": EVENT_SYSTEM,
    "code": "visit-recording",
    "display": "Virtual visit recording",
}
_DISPLAYS = {
    "room-provisioned": "Room provisioned",
    "patient-waiting": "Patient waiting",
    "visit-started": "Visit started",
    "participant-joined": "Participant joined",
    "participant-left": "Participant left",
    "visit-ended": "Visit ended",
    "room-closed": "Room closed",
    "no-show": "No-show",
    "recording-linked": "Recording linked",
    "recording-discarded": "Recording discarded",
}
SUBTYPES = tuple(_DISPLAYS)
# R4 AuditEvent.source.type: security-source-type#4 "Application Server".
_SOURCE_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
    "code": "4",
    "display": "Application Server",
}
# R4 AuditEvent.entity.type: audit-entity-type#2 "System Object" (a delivery, a recording
# at the provider).
_SYSTEM_OBJECT = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
    "code": "2",
    "display": "System Object",
}


def audit_event(
    subtype: str,
    at: datetime,
    about: Iterable[str],
    *,
    who: str | None = None,
    display: str | None = None,
    delivery: str | None = None,
    outcome: str | None = None,
    action: str = "E",
    failed: bool = False,
    named: Iterable[JSONObject] = (),
) -> JSONObject:
    """An AuditEvent for `subtype` at `at`; `about`: "Appointment/1", "Encounter/2",
    "Patient/3"...; `who`/`display`: the person acting (a reference, a name, or both);
    `outcome`: a reason given for the event (AuditEvent.outcomeDesc); `action` its R4
    audit-event-action (C create, D delete, E execute); `failed`: it fell short of what
    it set out to do (audit-event-outcome 4, minor failure); `named`: identifiers of
    things outside the server the event is about (AuditEvent.entity.what.identifier)."""
    if subtype not in _DISPLAYS:
        raise ValueError(f"Unknown telehealth event {subtype!r}")
    agent: JSONObject = {"requestor": who is not None or display is not None}
    person: JSONObject = {}
    if who is not None:
        person["reference"] = who
    if display:
        person["display"] = display
    agent["who"] = person or {"display": "fhirserver"}
    entities: list[JSONObject] = [{"what": {"reference": reference}} for reference in about]
    entities += [
        {"what": {"identifier": identifier}, "type": _SYSTEM_OBJECT} for identifier in named
    ]
    if delivery is not None:
        entities.append({"type": _SYSTEM_OBJECT, "name": delivery})
    event: JSONObject = {
        "resourceType": "AuditEvent",
        "type": {"system": EVENT_SYSTEM, "code": "virtual-visit", "display": "Virtual visit"},
        "subtype": [{"system": EVENT_SYSTEM, "code": subtype, "display": _DISPLAYS[subtype]}],
        "action": action,
        "recorded": format_instant(at),
        "outcome": "4" if failed else "0",
        "agent": [agent],
        "source": {"observer": {"display": "fhirserver"}, "type": [_SOURCE_TYPE]},
        "entity": entities,
    }
    if outcome:
        event["outcomeDesc"] = outcome
    return event
