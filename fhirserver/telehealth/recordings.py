"""Recordings of virtual visits: whether the patient's Consent allows one, and the
DocumentReference a finished recording becomes (R4 documentreference.html).

Nothing is recorded without consent, at three places:
- a host token may start the provider's recording only when `recording_permitted` holds
  at the visit's start (visit_operations.py; the providers that grant recording per token);
- a finished recording the provider reports (webhooks.py) is linked to the record only
  when one Consent holds from when it began to when it ended and when it arrives (a
  Consent withdrawn meanwhile wins), decided again inside the unit of work that links it;
- otherwise it is deleted at the provider where the provider's API allows, and only an
  AuditEvent `recording-discarded` says it existed.

The recording stays at the provider: the DocumentReference's attachment holds the
provider's URL (fetched with the clinic's provider credentials), never a download token
and never a copy, since recordings are far larger than a resource may be.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.storage.base import Reader
from fhirserver.telehealth.audit import VISIT_RECORDING
from fhirserver.telehealth.providers import Recording
from fhirserver.telehealth.records import find, load
from fhirserver.telehealth.virtual_service import (
    BASE_URL,
    consent_permits_recording,
    consent_permits_visit,
    patient_reference,
)

#: The most active Consents of one patient read to decide.
CONSENTS_READ = 100
#: attachment.size is an R4 unsignedInt.
_MAX_SIZE = 2**31 - 1


def recording_identifier_system(provider: str) -> str:
    """DocumentReference.identifier.system of a provider's recording ids: one recording
    is linked once, whatever how often its webhook is delivered."""
    return f"{BASE_URL}/sid/recording-{provider}"


async def active_consents(reader: Reader, patient: str) -> list[JSONObject]:
    """The patient's active Consents (at most CONSENTS_READ)."""
    criteria = [("patient", patient), ("status", "active")]
    found = [load(v) for v in await find(reader, "Consent", criteria, CONSENTS_READ)]
    return [consent for consent in found if consent is not None]


async def visit_permitted(reader: Reader, patient: str, at: datetime) -> bool:
    """Whether a telehealth Consent of `patient` is in force at `at`."""
    consents = await active_consents(reader, patient)
    return any(consent_permits_visit(consent, patient, at) for consent in consents)


async def recording_permitted(
    reader: Reader, appointment: JSONObject, instants: Iterable[datetime]
) -> bool:
    """Whether one recording Consent of the Appointment's patient is in force at every
    one of `instants` (one Consent, so that no gap between two Consents' periods is
    covered by neither); False for a visit without a patient."""
    patient = patient_reference(appointment)
    if patient is None:
        return False
    moments = list(instants)
    return any(
        all(consent_permits_recording(consent, patient, at) for at in moments)
        for consent in await active_consents(reader, patient)
    )


def recording_instants(recordings: Iterable[Recording], now: datetime) -> list[datetime] | None:
    """When a Consent must have been in force for `recordings` to be linked: as each
    began and ended, and now, when they arrive (a Consent withdrawn meanwhile wins).
    None when a recording does not say when it began: consent then cannot be shown."""
    instants = [now]
    for recording in recordings:
        if recording.started is None:
            return None
        instants.append(recording.started)
        if recording.duration is not None:
            instants.append(recording.started + timedelta(seconds=recording.duration))
    return instants


def recording_document(
    provider: str,
    recording: Recording,
    appointment: JSONObject,
    encounter: JSONObject | None,
    now: datetime,
) -> JSONObject:
    """The DocumentReference of a finished recording: current and final, typed
    `telehealth-event#visit-recording`, about the visit's patient, its context the
    Encounter (and the Appointment as related), its attachment the provider's URL."""
    attachment: JSONObject = {
        "contentType": recording.content_type,
        "url": recording.url,
        "title": recording.title,
    }
    if recording.size is not None and recording.size <= _MAX_SIZE:
        attachment["size"] = recording.size
    context: JSONObject = {"related": [{"reference": f"Appointment/{appointment.get('id')}"}]}
    if encounter is not None:
        context["encounter"] = [{"reference": f"Encounter/{encounter.get('id')}"}]
    if recording.started is not None:
        attachment["creation"] = format_instant(recording.started)
        if recording.duration is not None:
            end = recording.started + timedelta(seconds=recording.duration)
            context["period"] = {
                "start": format_instant(recording.started),
                "end": format_instant(end),
            }
    document: JSONObject = {
        "resourceType": "DocumentReference",
        "identifier": [
            {"system": recording_identifier_system(provider), "value": recording.recording_id}
        ],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [VISIT_RECORDING], "text": "Virtual visit recording"},
        "date": format_instant(now),
        "description": f"Recording of the virtual visit, held at {provider}",
        "content": [{"attachment": attachment}],
        "context": context,
    }
    patient = patient_reference(appointment)
    if patient is not None:
        document["subject"] = {"reference": patient}
    return document
