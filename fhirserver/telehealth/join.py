"""Join by meeting code (README "Telehealth" / "Join by code"): a patient (or their guest)
types the code; before the visit starts they wait (the Appointment becomes `arrived`),
once it has they get a guest token and a participant period opens on the Encounter.
Every code that does not admit now gets the same `NotOpen`, whatever the reason, so an
answer tells a guesser nothing. No HTTP here: rest/telehealth.py rate-limits and answers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fhirserver.errors import NotFound
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import UnitOfWork
from fhirserver.storage.retry import run_unit
from fhirserver.telehealth import codes
from fhirserver.telehealth.appointment_lifecycle import patient_arrived
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.encounter_lifecycle import participant_joined
from fhirserver.telehealth.lifecycle import FINAL_ENCOUNTER, instant
from fhirserver.telehealth.providers import ParticipantToken, Room
from fhirserver.telehealth.records import (
    about_visit,
    audit,
    find,
    load,
    room_id,
    save,
    visit_encounter,
    visit_encounter_version,
)
from fhirserver.telehealth.virtual_service import is_virtual, patient_reference
from fhirserver.telehealth.waiting_room import WaitingRoom, waiting_room

# Appointment statuses in which a meeting code admits (inside the time window).
_JOINABLE = frozenset({"booked", "arrived", "checked-in", "fulfilled"})


@dataclass(frozen=True)
class Joined:
    """A join by code: `waiting` until the visit starts, then the guest's token."""

    appointment_id: str
    waiting: bool
    start: str | None = None
    token: ParticipantToken | None = None
    # While waiting: who the visit is with, and the page's language.
    room: WaitingRoom = field(default_factory=WaitingRoom)


class NotOpen(NotFound):
    """The one answer for a code that is unknown, malformed, too early or expired."""

    def __init__(self) -> None:
        super().__init__("No visit is open for this meeting code")


async def join_by_code(context: VisitContext, typed_code: str, display: str) -> Joined:
    """A patient (or their guest) enters by meeting code: waiting room before the visit
    starts (the Appointment becomes `arrived`), a guest token once it has. Every code
    that does not admit now gets `NotOpen`, whatever the reason."""
    code = codes.normalize(typed_code)
    if code is None:
        raise NotOpen()
    writes, join_early = context.writes, context.settings.join_early
    # The room first, outside the unit (for 100ms a network call): a provider outage
    # must not leave a join recorded for someone who got no token.
    now = writes.clock()
    room = await _room_to_join(context, code, now)

    async def work(unit: UnitOfWork) -> tuple[JSONObject, str | None, bool]:
        """The Appointment, its patient, and whether the visit has started."""
        found = await find(unit, "Appointment", [("meeting-code", code)], 1)
        current = found[0] if found else None
        appointment = load(current)
        if appointment is None or not _admits(appointment, now, join_early):
            raise NotOpen()
        encounter_version = await visit_encounter_version(unit, str(appointment["id"]))
        encounter = load(encounter_version)
        if encounter is not None and encounter.get("status") in FINAL_ENCOUNTER:
            raise NotOpen()
        patient = patient_reference(appointment)
        arrived = patient_arrived(appointment)
        if arrived != appointment:
            await save(unit, writes, arrived, current)
            about = about_visit(appointment)
            await audit(unit, writes, "patient-waiting", now, about, who=patient, display=display)
        # Started, with the room in hand (else the next poll admits).
        started = (
            encounter is not None
            and encounter.get("status") == "in-progress"
            and room is not None
            and room.room_id == room_id(appointment)
        )
        if encounter is not None and started:
            joined = participant_joined(encounter, patient, display, now)
            if joined != encounter:
                await save(unit, writes, joined, encounter_version)
                about = about_visit(appointment, encounter)
                await audit(
                    unit, writes, "participant-joined", now, about, who=patient, display=display
                )
        return appointment, patient, started

    appointment, patient, started = await run_unit(context.store, work)
    if not started or room is None:
        start = appointment.get("start")
        shown = await waiting_room(context.store, appointment)
        return Joined(
            str(appointment["id"]), True, start if isinstance(start, str) else None, room=shown
        )
    identity = patient or f"guest-{uuid.uuid4().hex[:12]}"
    token = context.provider.participant_token(
        room, identity, display, "guest", context.settings.token_ttl
    )
    return Joined(str(appointment["id"]), False, token=token)


async def _room_to_join(context: VisitContext, code: str, now: datetime) -> Room | None:
    """The room of the visit this code opens, if it admits now and has started."""
    store = context.store
    found = await find(store, "Appointment", [("meeting-code", code)], 1)
    seen = load(found[0]) if found else None
    if seen is None or not _admits(seen, now, context.settings.join_early):
        return None
    encounter = await visit_encounter(store, str(seen["id"]))
    room = room_id(seen)
    if encounter is None or encounter.get("status") != "in-progress" or room is None:
        return None
    return await context.provider.room(room)


def _admits(appointment: JSONObject, now: datetime, join_early: timedelta) -> bool:
    if not is_virtual(appointment) or appointment.get("status") not in _JOINABLE:
        return False
    if room_id(appointment) is None:
        return False
    start = instant(appointment.get("start"))
    return start is None or now >= start - join_early
