"""Call quality of virtual visits as R4 Observations (observation.html): what a provider
reports of a participant's connection becomes an Observation on the visit's Encounter.

One Observation per report: `code` call-quality#network-quality
(extensions/CodeSystem-call-quality.json), `valueCodeableConcept` good, warning or bad,
`status` final, `subject` the visit's patient (the visit is part of the patient's
record), `focus` the participant whose connection it was (a reference, else a display
name), `encounter` the visit's Encounter and `effectiveDateTime` the time of the report.
Written in the unit of work of the participant event that carried it, so a delivery
repeated writes it once.
"""

from __future__ import annotations

from datetime import datetime

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.telehealth.providers import NetworkQuality
from fhirserver.telehealth.virtual_service import BASE_URL, patient_reference

CALL_QUALITY_SYSTEM = f"{BASE_URL}/CodeSystem/call-quality"
_DISPLAYS: dict[str, str] = {"good": "Good", "warning": "Warning", "bad": "Bad"}


def quality_observation(
    quality: NetworkQuality,
    at: datetime,
    appointment: JSONObject,
    encounter: JSONObject,
    who: str | None,
    display: str | None,
) -> JSONObject:
    """The Observation of one network-quality report about a participant."""
    focus: JSONObject = {}
    if who is not None:
        focus["reference"] = who
    if display:
        focus["display"] = display
    observation: JSONObject = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": CALL_QUALITY_SYSTEM,
                    "code": "network-quality",
                    "display": "Participant network quality",
                }
            ]
        },
        "encounter": {"reference": f"Encounter/{encounter.get('id')}"},
        "effectiveDateTime": format_instant(at),
        "valueCodeableConcept": {
            "coding": [
                {"system": CALL_QUALITY_SYSTEM, "code": quality, "display": _DISPLAYS[quality]}
            ]
        },
    }
    patient = patient_reference(appointment)
    if patient is not None:
        observation["subject"] = {"reference": patient}
    if focus:
        observation["focus"] = [focus]
    return observation
