"""`$start-virtual-visit` and `$end-virtual-visit` (the OperationDefinitions in
extensions/; R4 operations.html; README "Telehealth" / "Lifecycle"): start (or rejoin) a
visit with working join details, and finish its Encounter. No HTTP here: rest/telehealth.py
reads the Parameters and answers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from fhirserver.auth.access import Access
from fhirserver.auth.policy import may_run_visit
from fhirserver.errors import Forbidden
from fhirserver.interactions import crud
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import UnitOfWork, Version
from fhirserver.storage.retry import run_unit
from fhirserver.telehealth.context import VisitContext, join_url
from fhirserver.telehealth.encounter_lifecycle import end_visit, is_startable, start_visit
from fhirserver.telehealth.lifecycle import business_rule
from fhirserver.telehealth.providers import ParticipantToken, Room
from fhirserver.telehealth.recordings import recording_permitted, visit_permitted
from fhirserver.telehealth.records import (
    about_encounter,
    about_visit,
    assign_room,
    audit,
    create,
    current_content,
    load,
    max_participants,
    room_id,
    save,
    visit_encounter,
    visit_encounter_version,
)
from fhirserver.telehealth.virtual_service import (
    patient_reference,
    virtual_service,
)

logger = logging.getLogger("fhirserver.telehealth")
EVERYTHING = Access.everything()


@dataclass(frozen=True)
class StartedVisit:
    encounter: JSONObject
    host: ParticipantToken
    patient_url: str
    meeting_code: str


async def start_virtual_visit(
    context: VisitContext,
    appointment_id: str,
    practitioner: str | None = None,
    display: str | None = None,
    access: Access = EVERYTHING,
) -> StartedVisit:
    """Start (or rejoin) the visit: working join details, or a 422 / 502 / 503 with
    nothing written. The provider is called before the unit of work: a failure there
    leaves the store untouched, and a room made by a call whose write then lost a race
    is the same room (create_room is idempotent on the Appointment id)."""
    store, provider, settings = context.store, context.provider, context.settings
    appointment = load(await crud.read(store, "Appointment", appointment_id, access)) or {}
    _require_visit_role(access, appointment)
    is_startable(appointment, await visit_encounter(store, appointment_id))
    if settings.require_consent:
        await _check_consent(context, appointment)
    existing_room = room_id(appointment)
    if existing_room is not None:
        room = await provider.room(existing_room)
    else:
        room = await provider.create_room(appointment_id, max_participants(appointment))
    try:
        appointment, visit = await _start_in_unit(
            context, appointment_id, room, practitioner, display
        )
    except Exception:
        if existing_room is None:
            await _drop_unused_room(context, appointment_id, room)
        raise
    stored_room = room_id(appointment)
    if stored_room is not None and stored_room != room.room_id:
        room = await provider.room(stored_room)
    service = virtual_service(appointment)
    code = service.meeting_code if service is not None else None
    assert code is not None  # assigned above, in this unit or before
    # The host's token may start the recording only with the patient's recording Consent
    # in force now (recordings.py); for providers that cannot grant it per token, a
    # recording made anyway is checked again when it arrives.
    record = await recording_permitted(store, appointment, [context.writes.clock()])
    host = provider.participant_token(
        room,
        practitioner or f"host-{uuid.uuid4().hex[:12]}",
        display or "Clinician",
        "host",
        settings.token_ttl,
        record=record,
    )
    return StartedVisit(visit, host, join_url(settings, code), code)


async def _start_in_unit(
    context: VisitContext,
    appointment_id: str,
    room: Room,
    practitioner: str | None,
    display: str | None,
) -> tuple[JSONObject, JSONObject]:
    writes = context.writes
    now = writes.clock()

    async def work(unit: UnitOfWork) -> tuple[JSONObject, JSONObject]:
        # Read again: the Appointment may have changed while the provider answered.
        current: Version | None = await crud.read(unit, "Appointment", appointment_id)
        appointment = load(current) or {}
        encounter_version = await visit_encounter_version(unit, appointment_id)
        encounter = load(encounter_version)
        is_startable(appointment, encounter)
        if room_id(appointment) is None:
            appointment = await assign_room(context, unit, appointment, current, room)
            current = await unit.read("Appointment", appointment_id)
        started, visit = start_visit(
            appointment,
            encounter,
            now,
            practitioner=practitioner,
            practitioner_display=display,
        )
        if started != appointment:
            await save(unit, writes, started, current)
        if encounter is None:
            visit = await create(unit, writes, visit)
        elif visit != encounter:
            visit = await save(unit, writes, visit, encounter_version)
        if encounter is None or encounter.get("status") != "in-progress":
            about = about_visit(appointment, visit)
            await audit(
                unit, writes, "visit-started", now, about, who=practitioner, display=display
            )
        return appointment, visit

    return await run_unit(context.store, work)


async def _drop_unused_room(context: VisitContext, appointment_id: str, room: Room) -> None:
    """Close a room made for a start that failed, unless the Appointment holds it
    (another start got it in): it would stay open at the provider with nothing to
    close it. Best effort: the start's own error is what the caller gets."""
    appointment = await current_content(context.store, "Appointment", appointment_id)
    if appointment is not None and room_id(appointment) == room.room_id:
        return
    try:
        await context.provider.close_room(room)
    except Exception:
        logger.warning("room of Appointment/%s left open at the provider", appointment_id)


async def end_virtual_visit(
    context: VisitContext,
    resource_type: str,
    resource_id: str,
    reason: str | None = None,
    access: Access = EVERYTHING,
) -> JSONObject:
    """Finish the visit's Encounter (of an Encounter, or of an Appointment's visit);
    `reason`, the operation's input as text, goes into the AuditEvent."""
    writes = context.writes
    now = writes.clock()

    async def work(unit: UnitOfWork) -> JSONObject:
        current: Version | None
        if resource_type == "Appointment":
            appointment = await crud.read(unit, "Appointment", resource_id, access)
            _require_visit_role(access, load(appointment) or {})
            current = await visit_encounter_version(unit, resource_id)
            if current is None:
                raise business_rule(
                    f"The visit of Appointment/{resource_id} has not started: "
                    "there is no Encounter to end",
                    "Appointment.status",
                )
        else:
            current = await crud.read(unit, "Encounter", resource_id, access)
            _require_visit_role(access, load(current) or {})
        encounter = load(current) or {}
        ended = end_visit(encounter, now)
        if ended == encounter:
            return encounter
        stored = await save(unit, writes, ended, current)
        about = about_encounter(stored)
        await audit(unit, writes, "visit-ended", now, about, outcome=reason)
        return stored

    return await run_unit(context.store, work)


def _require_visit_role(access: Access, resource: JSONObject) -> None:
    """403 unless a system client or a practitioner taking part runs the operation
    (auth.policy.may_run_visit)."""
    if not may_run_visit(access, resource, _participants(resource)):
        raise Forbidden(
            "Starting or ending a virtual visit needs a practitioner who takes part in it,"
            " or a system client, allowed to update it"
        )


def _participants(resource: JSONObject) -> set[str]:
    """Appointment.participant.actor, or Encounter.participant.individual, references."""
    field = "actor" if resource.get("resourceType") == "Appointment" else "individual"
    return {
        str(participant[field]["reference"])
        for participant in resource.get("participant") or []
        if isinstance(participant, dict)
        and isinstance(participant.get(field), dict)
        and isinstance(participant[field].get("reference"), str)
    }


async def _check_consent(context: VisitContext, appointment: JSONObject) -> None:
    patient = patient_reference(appointment)
    now = context.writes.clock()
    if patient is not None and await visit_permitted(context.store, patient, now):
        return
    raise business_rule(
        f"{patient or 'The patient'} has no active telehealth Consent "
        "(scope treatment, category telehealth) covering this visit",
        "Appointment.participant",
    )
