"""What the waiting room shows a patient whose code admits now (README "Join by code"):
who the visit is with, by display name only, and the language to show the page in.
Nothing else from the record leaves the server through the join page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Reader
from fhirserver.telehealth.records import load
from fhirserver.telehealth.virtual_service import patient_reference

# Who a patient may be told they meet: the people and places of the visit.
_SHOWN_TYPES = ("Practitioner", "PractitionerRole", "RelatedPerson", "Location")
MAX_NAMES = 5
MAX_NAME_CHARS = 80


@dataclass(frozen=True)
class WaitingRoom:
    with_whom: tuple[str, ...] = ()
    # A BCP 47 tag (R4 Resource.language, Patient.communication), if the record names one.
    language: str | None = None


async def waiting_room(store: Reader, appointment: JSONObject) -> WaitingRoom:
    patient_ref = patient_reference(appointment)
    names: list[str] = []
    for participant in _list(appointment.get("participant")):
        actor = participant.get("actor")
        if not isinstance(actor, dict) or actor.get("reference") == patient_ref:
            continue
        name = await _display(store, actor)
        if name and name not in names:
            names.append(name[:MAX_NAME_CHARS])
    return WaitingRoom(tuple(names[:MAX_NAMES]), await _language(store, appointment, patient_ref))


async def _display(store: Reader, actor: dict[str, Any]) -> str | None:
    display = actor.get("display")
    if isinstance(display, str) and display.strip():
        return display.strip()
    reference = actor.get("reference")
    if not isinstance(reference, str) or reference.count("/") != 1:
        return None
    resource_type, resource_id = reference.split("/")
    if resource_type not in _SHOWN_TYPES:
        return None
    resource = load(await store.read(resource_type, resource_id))
    if resource is None:
        return None
    if isinstance(resource.get("name"), str):  # Location
        return str(resource["name"])
    return human_name(_list(resource.get("name")))


def human_name(names: list[Any]) -> str | None:
    """A HumanName as people write it: its text, else prefix, given and family."""
    for name in names:
        if isinstance(name.get("text"), str) and name["text"].strip():
            return str(name["text"]).strip()
        parts = [*_strings(name.get("prefix")), *_strings(name.get("given"))]
        if isinstance(name.get("family"), str):
            parts.append(name["family"])
        if parts:
            return " ".join(parts)
    return None


async def _language(store: Reader, appointment: JSONObject, patient: str | None) -> str | None:
    """The patient's preferred language (Patient.communication), else the Appointment's."""
    if patient is not None:
        record = load(await store.read("Patient", patient.split("/")[1]))
        communications = _list((record or {}).get("communication"))
        preferred = [c for c in communications if c.get("preferred") is True] or communications
        for communication in preferred:
            for coding in _list((communication.get("language") or {}).get("coding")):
                if isinstance(coding.get("code"), str):
                    return str(coding["code"])
    language = appointment.get("language")
    return language if isinstance(language, str) else None


def _list(value: Any) -> list[Any]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
