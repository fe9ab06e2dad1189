"""A virtual Appointment's side of the lifecycle (R4 appointment.html): the check of each
write against `lifecycle.APPOINTMENT_TRANSITIONS` and the effects it implies, the waiting
room, and when a no-show is due.

Server-managed content (the choice: keep the server's values, do not refuse): the
virtual-service sub-extensions `address`, `sessionKey` and `meetingCode` are the
server's. On a client's write they are replaced by the stored values (none on a create),
whatever the client sent or left out; a client that drops the whole extension gets it
back (a virtual Appointment stays virtual: cancel it and book another). This is how
servers treat `meta`, and it lets clients that round-trip only what they know update an
Appointment without a 422. Refused (422): changing `channelType` once a room exists, and
an extension left with nothing of the client's (ext-1).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from fhirserver.resources.codec import JSONObject
from fhirserver.telehealth.lifecycle import (
    CALLED_OFF,
    DEFAULT_NO_SHOW_GRACE,
    ROOM_STATUSES,
    Checked,
    DisposeRoom,
    Effect,
    ProvisionRoom,
    ScheduleNoShowCheck,
    business_rule,
    checked_transition,
    effect_subject,
    instant,
)
from fhirserver.telehealth.virtual_service import (
    VirtualService,
    is_virtual,
    virtual_service,
    with_virtual_service,
)


def check_appointment(
    old: JSONObject | None,
    new: JSONObject,
    *,
    no_show_grace: timedelta = DEFAULT_NO_SHOW_GRACE,
    server_write: bool = False,
) -> Checked:
    """Check a create (`old` None) or update of an Appointment; see the module docstring.

    `server_write` is for the server's own writes (room provisioning): the server-managed
    sub-extensions are then taken from `new`. Raises `Unprocessable` (422, issue
    business-rule, expression `Appointment.status` or `Appointment.extension`) for a
    transition the table does not allow. `new` must carry its id when effects follow.
    """
    if not (is_virtual(new) or is_virtual(old)):
        return Checked(new, ())
    resource = new if server_write else _keep_server_parts(old, new)
    before, status = checked_transition("Appointment", old, resource)
    was_virtual = is_virtual(old)
    had_room = was_virtual and before in ROOM_STATUSES
    effects: list[Effect] = []
    # Entering a status with a room from one without (or created so, or made virtual).
    if status in ROOM_STATUSES and not had_room:
        effects.append(ProvisionRoom(effect_subject(resource)))
    # Booked with a start: newly, or its start moved.
    start = instant(resource.get("start"))
    moved = old is None or instant(old.get("start")) != start
    if status == "booked" and start is not None and (not had_room or moved):
        effects.append(ScheduleNoShowCheck(effect_subject(resource), start + no_show_grace))
    # Called off from a status that may hold a room.
    if status in CALLED_OFF and was_virtual and before in ROOM_STATUSES | {"fulfilled"}:
        effects.append(DisposeRoom(effect_subject(resource)))
    return Checked(resource, tuple(effects))


def patient_arrived(appointment: JSONObject) -> JSONObject:
    """The Appointment once its patient joined the waiting room: booked becomes arrived;
    arrived, checked-in and fulfilled stay as they are. 422 for any other status."""
    status = appointment.get("status")
    if status in {"arrived", "checked-in", "fulfilled"}:
        return dict(appointment)
    if status != "booked":
        raise business_rule(
            f"Appointment/{appointment.get('id')} is {status}: its patient cannot join",
            "Appointment.status",
        )
    return {**appointment, "status": "arrived"}


def no_show_due(
    appointment: JSONObject, now: datetime, grace: timedelta = DEFAULT_NO_SHOW_GRACE
) -> bool:
    """Whether the no-show job should mark this Appointment `noshow` now: virtual, still
    booked (a patient who joined made it arrived), and `start` + grace has passed."""
    start = instant(appointment.get("start"))
    return (
        is_virtual(appointment)
        and appointment.get("status") == "booked"
        and start is not None
        and now >= start + grace
    )


def _keep_server_parts(old: JSONObject | None, new: JSONObject) -> JSONObject:
    stored = virtual_service(old) if old is not None and is_virtual(old) else None
    sent = virtual_service(new) if is_virtual(new) else None
    if sent is None:
        if stored is None:
            return new
        return with_virtual_service(new, stored)
    kept = replace(
        sent,
        address=stored.address if stored else None,
        session_key=stored.session_key if stored else None,
        meeting_code=stored.meeting_code if stored else None,
    )
    if kept.is_empty():
        raise business_rule(
            "The virtual-service extension needs a channelType (or another sub-extension of "
            "the client's): address, sessionKey and meetingCode are set by the server",
            "Appointment.extension",
        )
    if stored is not None and _has_room(stored) and _channel(kept) != _channel(stored):
        raise business_rule(
            "The virtual visit's channelType cannot change once its room is provisioned: "
            "cancel this Appointment and book another",
            "Appointment.extension",
        )
    return new if kept == sent else with_virtual_service(new, kept)


def _channel(service: VirtualService) -> tuple[str | None, str] | None:
    coding = service.channel_type
    return None if coding is None else (coding.system, coding.code)


def _has_room(service: VirtualService) -> bool:
    return any((service.address, service.session_key, service.meeting_code))
