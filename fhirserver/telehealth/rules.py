"""The telehealth lifecycle as write rules: every write of an Appointment or Encounter,
from REST or a Bundle, is checked (`appointment_lifecycle.py`, `encounter_lifecycle.py`)
inside its unit of work, and the side effects its transition implies are recorded there
as jobs. They commit with the state change or not at all, and run after commit
(DESIGN.md "Side effects and external calls").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from fhirserver.interactions.rules import Actor, Change, WriteRule
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Job, UnitOfWork
from fhirserver.telehealth import appointment_lifecycle, encounter_lifecycle, lifecycle
from fhirserver.telehealth.virtual_service import is_virtual, provider_name, virtual_service

# Job kinds, one per effect; the key is the resource id, so recording an effect again
# replaces the pending job rather than adding a second.
PROVISION = "telehealth.provision-room"
DISPOSE = "telehealth.dispose-room"
CLOSE = "telehealth.close-visit"
NO_SHOW = "telehealth.no-show-check"


def effect_job(effect: lifecycle.Effect, now: datetime) -> Job:
    if isinstance(effect, lifecycle.ProvisionRoom):
        return Job(PROVISION, effect.appointment_id, now)
    if isinstance(effect, lifecycle.DisposeRoom):
        return Job(DISPOSE, effect.appointment_id, now)
    if isinstance(effect, lifecycle.CloseVisit):
        return Job(CLOSE, effect.encounter_id, now)
    return Job(NO_SHOW, effect.appointment_id, effect.at)


async def _record(unit: UnitOfWork, effects: tuple[lifecycle.Effect, ...], now: datetime) -> None:
    for effect in effects:
        await unit.put_job(effect_job(effect, now))


def _check_channel(appointment: JSONObject, served: str) -> None:
    """A room is about to be provisioned: its channel must be the configured provider's."""
    service = virtual_service(appointment)
    name = provider_name(service)
    coding = service.channel_type if service is not None else None
    if coding is None or name == served:
        return
    text = (
        f"channelType {coding.code!r} is not served here: this server's video provider is "
        f"{served} (leave channelType out for the default)"
    )
    raise lifecycle.business_rule(text, "Appointment.extension")


def write_rules(no_show_grace: timedelta, provider: str) -> Mapping[str, WriteRule]:
    async def appointment(change: Change) -> JSONObject | None:
        current, new = change.current, change.new
        if new is None:
            # A deleted virtual Appointment keeps no room.
            if current is not None and is_virtual(current):
                await change.unit.put_job(Job(DISPOSE, str(current["id"]), change.now))
            return None
        # Only the server writes an Appointment's room (address, sessionKey, meetingCode).
        checked = appointment_lifecycle.check_appointment(
            current,
            new,
            no_show_grace=no_show_grace,
            server_write=change.actor is Actor.SERVER,
        )
        if any(isinstance(e, lifecycle.ProvisionRoom) for e in checked.effects):
            _check_channel(checked.resource, provider)
        await _record(change.unit, checked.effects, change.now)
        return checked.resource

    async def encounter(change: Change) -> JSONObject | None:
        if change.new is None:
            return None
        checked = encounter_lifecycle.check_encounter(change.current, change.new, now=change.now)
        await _record(change.unit, checked.effects, change.now)
        return checked.resource

    return {"Appointment": appointment, "Encounter": encounter}
