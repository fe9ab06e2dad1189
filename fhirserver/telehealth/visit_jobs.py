"""The jobs the lifecycle records (rules.py), acted on after commit by the app's job
runner (DESIGN.md "Side effects and external calls"): provision a room, dispose of the
room of a visit called off, close the room of a visit that ended, and the no-show check.

Each is idempotent (a job can run twice, when a lease runs out mid-run) and calls the
provider only outside a unit of work; a provider outage is TryLater, retried with backoff.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.storage.base import Job, UnitOfWork
from fhirserver.storage.retry import run_unit
from fhirserver.telehealth import rules
from fhirserver.telehealth.appointment_lifecycle import no_show_due
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.lifecycle import instant
from fhirserver.telehealth.providers import ProviderUnavailable, Room
from fhirserver.telehealth.records import (
    about_encounter,
    about_visit,
    assign_room,
    audit,
    current_content,
    find,
    load,
    max_participants,
    needs_room,
    room_id,
    save,
)
from fhirserver.worker import Handler, TryLater

T = TypeVar("T")


def job_handlers(context: VisitContext) -> Mapping[str, Handler]:
    """What the job runner calls for each kind of job the lifecycle records."""
    return {
        rules.PROVISION: functools.partial(provision_room, context),
        rules.DISPOSE: functools.partial(dispose_room, context),
        rules.CLOSE: functools.partial(close_visit, context),
        rules.NO_SHOW: functools.partial(check_no_show, context),
    }


async def provision_room(context: VisitContext, job: Job) -> None:
    """Create the room of a virtual Appointment that needs one, then write its address,
    sessionKey and meeting code. Nothing to do once it has them, or no longer needs one."""
    store, provider = context.store, context.provider
    appointment = await current_content(store, "Appointment", job.key)
    if appointment is None or not needs_room(appointment):
        return
    if room_id(appointment) is not None:
        return
    room = await _provider_call(provider.create_room(job.key, max_participants(appointment)))

    async def work(unit: UnitOfWork) -> JSONObject | None:
        """The Appointment as found; given the room if it still needs one."""
        current = await unit.read("Appointment", job.key)
        fresh = load(current)
        if fresh is not None and needs_room(fresh) and room_id(fresh) is None:
            return await assign_room(context, unit, fresh, current, room)
        return fresh

    fresh = await run_unit(store, work)
    # Cancelled (or given a room by $start-virtual-visit) while the room was made.
    if fresh is None or room_id(fresh) != room.room_id:
        await _provider_call(provider.close_room(room))


async def dispose_room(context: VisitContext, job: Job) -> None:
    """Close the room of an Appointment that will not take place (or was deleted)."""
    appointment = await current_content(context.store, "Appointment", job.key, deleted_ok=True)
    await _close_room_of(context, appointment)


async def close_visit(context: VisitContext, job: Job) -> None:
    """Close the room of a virtual Encounter that ended. A visit finished by a plain
    write (a PUT) gets its `visit-ended` AuditEvent here: `$end-virtual-visit` and the
    provider's room-ended event record theirs with the write, but a write rule cannot."""
    store = context.store
    encounter = await current_content(store, "Encounter", job.key, deleted_ok=True)
    if encounter is not None and encounter.get("status") == "finished":
        await _record_visit_ended(context, encounter)
    for reference in (encounter or {}).get("appointment") or []:
        target = local_reference(reference)
        if target is not None and target.startswith("Appointment/"):
            appointment_id = target.split("/")[1]
            appointment = await current_content(
                store, "Appointment", appointment_id, deleted_ok=True
            )
            await _close_room_of(context, appointment, encounter)


async def check_no_show(context: VisitContext, job: Job) -> None:
    """Mark a still-booked virtual Appointment `noshow` once start + grace has passed;
    its room is then disposed by the job that write records."""
    writes = context.writes
    now = writes.clock()

    async def work(unit: UnitOfWork) -> None:
        current = await unit.read("Appointment", job.key)
        appointment = load(current)
        if appointment is None or not no_show_due(appointment, now, context.settings.no_show_grace):
            return
        await save(unit, writes, {**appointment, "status": "noshow"}, current)
        await audit(unit, writes, "no-show", now, about_visit(appointment))

    await run_unit(context.store, work)


async def _record_visit_ended(context: VisitContext, encounter: JSONObject) -> None:
    """The finished visit's `visit-ended` AuditEvent, at its `period.end`, unless it has one."""
    about = about_encounter(encounter)
    recorded = [("subtype", "visit-ended"), ("entity", about[0])]
    writes = context.writes

    async def work(unit: UnitOfWork) -> None:
        if await find(unit, "AuditEvent", recorded, 1):
            return
        ended = instant((encounter.get("period") or {}).get("end")) or writes.clock()
        await audit(unit, writes, "visit-ended", ended, about)

    await run_unit(context.store, work)


async def _close_room_of(
    context: VisitContext, appointment: JSONObject | None, encounter: JSONObject | None = None
) -> None:
    room = room_id(appointment) if appointment is not None else None
    if room is None or appointment is None:
        return
    provider = context.provider
    await _provider_call(provider.close_room(Room(provider.name, room, room, "")))
    writes = context.writes
    about = about_visit(appointment, encounter)

    async def work(unit: UnitOfWork) -> None:
        # A job can run twice (a lease ran out mid-run): the room closes once.
        if await find(unit, "AuditEvent", [("subtype", "room-closed"), ("entity", about[0])], 1):
            return
        await audit(unit, writes, "room-closed", writes.clock(), about)

    await run_unit(context.store, work)


async def _provider_call(call: Awaitable[T]) -> T:
    """A provider call from a job: an outage is TryLater (retried with backoff)."""
    try:
        return await call
    except ProviderUnavailable as exc:
        raise TryLater(str(exc)) from None
