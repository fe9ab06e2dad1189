"""The virtual visit's state machine: pure functions over Appointment and Encounter dicts.

No I/O and no storage: the callers (the REST write path, the operations, the no-show job,
webhook handling) read, call these, and write the results with the effects recorded in
the same unit of work (DESIGN.md "Side effects and external calls").

Statuses are R4's (R4 valueset-appointmentstatus, valueset-encounter-status). There is no
`in-progress` Appointment: once the visit starts the Appointment is `fulfilled` ("the
encounter resource will exist and will track further status changes") and the live visit
is the Encounter's `in-progress`.

Which resources are managed
- An Appointment is managed when it carries the virtual-service extension (before or
  after the write). Ordinary Appointments are left to their clients: any status change
  is accepted and no effect follows, as the server has no room to keep in step.
- An Encounter is managed when its `class` is v3-ActCode#VR (before or after the write).

Appointment transitions (a status may always stay the same: an update of other fields;
a create may use any status)

| from                         | to                                                    |
|------------------------------|-------------------------------------------------------|
| proposed, pending, waitlist  | each other, booked, cancelled, entered-in-error       |
| booked                       | arrived, checked-in, fulfilled, cancelled, noshow,    |
|                              | entered-in-error                                      |
| arrived                      | checked-in, fulfilled, cancelled, noshow,             |
|                              | entered-in-error                                      |
| checked-in                   | fulfilled, cancelled, noshow, entered-in-error        |
| fulfilled, cancelled, noshow | entered-in-error (a correction)                       |
| entered-in-error             | nothing                                               |

Encounter transitions (virtual Encounters)

| from                         | to                                                    |
|------------------------------|-------------------------------------------------------|
| planned                      | arrived, triaged, in-progress, cancelled, e-i-e       |
| arrived                      | triaged, in-progress, cancelled, entered-in-error     |
| triaged                      | in-progress, cancelled, entered-in-error              |
| in-progress                  | onleave, finished, entered-in-error                   |
| onleave                      | in-progress, finished, entered-in-error               |
| finished, cancelled          | entered-in-error (a correction)                       |
| entered-in-error             | nothing                                               |
| unknown                      | anything (the real status became known)               |

R4 `cancelled` for an Encounter means "ended before it has begun", so an `in-progress`
visit ends as `finished` (or is corrected to `entered-in-error`), never `cancelled`.

Effects (returned, not performed)
- `ProvisionRoom`: a virtual Appointment enters booked, arrived or checked-in from a
  status without a room (or is created so, or becomes virtual while in one).
- `ScheduleNoShowCheck`: a virtual Appointment is booked with a `start` (newly, or its
  start moved); due at start + grace. The job re-reads the Appointment when due: only a
  still-`booked` one (no patient arrived) becomes `noshow` (`no_show_due`).
- `DisposeRoom`: a virtual Appointment becomes cancelled, noshow or entered-in-error from
  a status that may hold a room (booked, arrived, checked-in, fulfilled). Its meeting code
  stops working with it.
- `CloseVisit`: a virtual Encounter enters finished, cancelled or entered-in-error.

Server-managed content (the choice: keep the server's values, do not refuse)
- Appointment: the virtual-service sub-extensions `address`, `sessionKey` and `meetingCode`
  are the server's. On a client's write they are replaced by the stored values (none on a
  create), whatever the client sent or left out; a client that drops the whole extension
  gets it back (a virtual Appointment stays virtual: cancel it and book another). This is
  how servers treat `meta`, and it lets clients that round-trip only what they know update
  an Appointment without a 422. Refused (422): changing `channelType` once a room exists,
  and an extension left with nothing of the client's (ext-1).
- Encounter: `statusHistory` is kept by the server: on a status change the previous
  status is appended with its period. On a change to in-progress `period.start` defaults
  to now (from planned it becomes now: a planned period is the plan); on a change to
  finished `period.end` defaults to now and open participant periods close at
  `period.end`, so a PUT and `$end-virtual-visit` leave the same record.

Participants (R4 encounter.html): `Encounter.participant.individual` admits Practitioner,
PractitionerRole and RelatedPerson only. A Patient or a guest known only by name who
joins is recorded with R5's `Encounter.participant.actor` as a cross-version extension
(`virtual_service.PARTICIPANT_ACTOR_URL`). Each stay in the call is one participant entry with a
`period`; a participant planned by the Appointment and not yet joined has no period.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from fhirserver.errors import FHIRError, Issue, Unprocessable
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.resources.references import local_reference
from fhirserver.search.time import date_range
from fhirserver.telehealth.virtual_service import (
    PARTICIPANT_ACTOR_URL,
    VR_CLASS,
    VirtualService,
    is_virtual,
    patient_reference,
    virtual_service,
    with_virtual_service,
)

APPOINTMENT_STATUSES = (
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
)
ENCOUNTER_STATUSES = (
    "planned",
    "arrived",
    "triaged",
    "in-progress",
    "onleave",
    "finished",
    "cancelled",
    "entered-in-error",
    "unknown",
)

_BEFORE_BOOKING = frozenset({"proposed", "pending", "waitlist"})
_ENDED = frozenset({"cancelled", "noshow", "entered-in-error"})
APPOINTMENT_TRANSITIONS: Mapping[str, frozenset[str]] = {
    **{
        s: (_BEFORE_BOOKING - {s}) | {"booked", "cancelled", "entered-in-error"}
        for s in _BEFORE_BOOKING
    },
    "booked": frozenset({"arrived", "checked-in", "fulfilled"}) | _ENDED,
    "arrived": frozenset({"checked-in", "fulfilled"}) | _ENDED,
    "checked-in": frozenset({"fulfilled"}) | _ENDED,
    "fulfilled": frozenset({"entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "noshow": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
}
_FINAL_ENCOUNTER = frozenset({"finished", "cancelled", "entered-in-error"})
ENCOUNTER_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "planned": frozenset({"arrived", "triaged", "in-progress", "cancelled", "entered-in-error"}),
    "arrived": frozenset({"triaged", "in-progress", "cancelled", "entered-in-error"}),
    "triaged": frozenset({"in-progress", "cancelled", "entered-in-error"}),
    "in-progress": frozenset({"onleave", "finished", "entered-in-error"}),
    "onleave": frozenset({"in-progress", "finished", "entered-in-error"}),
    "finished": frozenset({"entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
    "unknown": frozenset(ENCOUNTER_STATUSES) - {"unknown"},
}

#: Appointment statuses in which a virtual Appointment has (or is getting) a room.
ROOM_STATUSES = frozenset({"booked", "arrived", "checked-in"})
#: Appointment statuses from which `$start-virtual-visit` may start the visit.
STARTABLE = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
DEFAULT_NO_SHOW_GRACE = timedelta(minutes=15)
# R4 Encounter.participant.individual: Reference(Practitioner | PractitionerRole | RelatedPerson).
_INDIVIDUAL_TYPES = frozenset({"Practitioner", "PractitionerRole", "RelatedPerson"})


@dataclass(frozen=True)
class ProvisionRoom:
    appointment_id: str


@dataclass(frozen=True)
class DisposeRoom:
    appointment_id: str


@dataclass(frozen=True)
class CloseVisit:
    encounter_id: str


@dataclass(frozen=True)
class ScheduleNoShowCheck:
    appointment_id: str
    at: datetime


Effect = ProvisionRoom | DisposeRoom | CloseVisit | ScheduleNoShowCheck


class Checked(NamedTuple):
    """A write that passed: the resource to store (server-managed parts restored) and the
    effects to record with it."""

    resource: JSONObject
    effects: tuple[Effect, ...]


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
    status = _status(resource, "Appointment", APPOINTMENT_STATUSES)
    before = old.get("status") if old is not None else None
    if (
        before is not None
        and before != status
        and status not in APPOINTMENT_TRANSITIONS.get(before, frozenset())
    ):
        raise _refused("Appointment", before, status, APPOINTMENT_TRANSITIONS)
    was_virtual = is_virtual(old)
    had_room = was_virtual and before in ROOM_STATUSES
    effects: list[Effect] = []
    if status in ROOM_STATUSES and not had_room:
        effects.append(ProvisionRoom(_id(resource)))
    start = instant(resource.get("start"))
    moved = old is None or instant(old.get("start")) != start
    if status == "booked" and start is not None and (not had_room or moved):
        effects.append(ScheduleNoShowCheck(_id(resource), start + no_show_grace))
    if status in _ENDED and was_virtual and before in ROOM_STATUSES | {"fulfilled"}:
        effects.append(DisposeRoom(_id(resource)))
    return Checked(resource, tuple(effects))


def check_encounter(old: JSONObject | None, new: JSONObject, *, now: datetime) -> Checked:
    """Check a create (`old` None) or update of an Encounter; see the module docstring.

    Raises `Unprocessable` (422, expression `Encounter.status`) for a transition the table
    does not allow; returns the Encounter with statusHistory, period and participant
    periods brought in line with its status, and `CloseVisit` when the visit ends.
    """
    if not (is_vr(new) or is_vr(old)):
        return Checked(new, ())
    status = _status(new, "Encounter", ENCOUNTER_STATUSES)
    before = old.get("status") if old is not None else None
    if (
        before is not None
        and before != status
        and status not in ENCOUNTER_TRANSITIONS.get(before, frozenset())
    ):
        raise _refused("Encounter", before, status, ENCOUNTER_TRANSITIONS)
    resource = copy.deepcopy(new)
    if old is not None:
        history = copy.deepcopy(old.get("statusHistory") or [])
        if history:
            resource["statusHistory"] = history
        else:
            resource.pop("statusHistory", None)
    if before != status:
        resource = _enter(resource, old, status, now)
    effects: tuple[Effect, ...] = ()
    if status in _FINAL_ENCOUNTER and before not in _FINAL_ENCOUNTER:
        effects = (CloseVisit(_id(resource)),)
    return Checked(resource, effects)


def is_vr(encounter: JSONObject | None) -> bool:
    """Whether an Encounter's class is v3-ActCode#VR (a virtual visit)."""
    return encounter is not None and VR_CLASS.matches(encounter.get("class"))


def is_startable(appointment: JSONObject, encounter: JSONObject | None = None) -> None:
    """Refuse (422) to start a visit for this Appointment (and its existing Encounter).

    Startable: a virtual Appointment that is booked, arrived or checked-in, or fulfilled
    (the visit was started before, or a client marked it so); with an Encounter, that
    Encounter must be virtual and not ended.
    """
    if appointment.get("resourceType") != "Appointment":
        raise business_rule("$start-virtual-visit needs an Appointment", "Appointment")
    name = f"Appointment/{appointment.get('id')}"
    if not is_virtual(appointment):
        raise business_rule(
            f"{name} is not a virtual Appointment: it has no virtual-service extension",
            "Appointment.extension",
        )
    status = appointment.get("status")
    if status not in STARTABLE:
        raise business_rule(
            f"{name} is {status}: a visit starts from booked, arrived, checked-in or fulfilled",
            "Appointment.status",
        )
    if encounter is None:
        return
    if not is_vr(encounter):
        raise business_rule(
            f"{name} already has Encounter/{encounter.get('id')}, which is not virtual",
            "Encounter.class",
        )
    if encounter.get("status") in _FINAL_ENCOUNTER:
        raise business_rule(
            f"The visit of {name} has ended: Encounter/{encounter.get('id')} is "
            f"{encounter.get('status')}",
            "Encounter.status",
        )


def start_visit(
    appointment: JSONObject,
    encounter: JSONObject | None,
    now: datetime,
    *,
    practitioner: str | None = None,
    practitioner_display: str | None = None,
) -> tuple[JSONObject, JSONObject]:
    """The Appointment fulfilled and its Encounter in-progress: `(appointment', encounter')`.

    Without an `encounter` a new one is built (no id: the caller assigns it): status
    in-progress, class VR, `appointment`, `subject` (the Appointment's Patient participant),
    `serviceType`, `reasonCode`, `reasonReference` and `basedOn` from the Appointment, one
    participant entry per Appointment participant who is a person (no period until they
    join) and `period.start` now. An existing Encounter (a retry, or one a client planned)
    is reused: moved to in-progress if it is not (a planned one's period.start, the plan,
    becomes now), its history kept. `practitioner`
    ("Practitioner/1") is added as a participant if absent. Idempotent: starting a started
    visit returns both unchanged. Raises `Unprocessable` where `is_startable` does.
    """
    is_startable(appointment, encounter)
    appointment_ = dict(appointment)
    appointment_["status"] = "fulfilled"
    if encounter is None:
        encounter_ = _new_encounter(appointment, now)
    else:
        encounter_ = copy.deepcopy(encounter)
        if encounter_.get("status") != "in-progress":
            encounter_ = _enter(encounter_, encounter, "in-progress", now)
    if practitioner is not None and not _entries(encounter_, practitioner, practitioner_display):
        encounter_.setdefault("participant", []).append(
            _participant(practitioner, practitioner_display)
        )
    return appointment_, encounter_


def end_visit(encounter: JSONObject, now: datetime) -> JSONObject:
    """The Encounter finished: statusHistory, `period.end` (now, unless set) and every open
    participant period closed at it. Idempotent on a finished Encounter; 422 for one that
    is not virtual or whose status cannot become finished (e.g. cancelled, planned)."""
    if not is_vr(encounter):
        raise business_rule(
            f"Encounter/{encounter.get('id')} is not a virtual visit (class is not VR)",
            "Encounter.class",
        )
    status = encounter.get("status")
    if status == "finished":
        return copy.deepcopy(encounter)
    if not isinstance(status, str) or "finished" not in ENCOUNTER_TRANSITIONS.get(
        status, frozenset()
    ):
        raise _refused("Encounter", str(status), "finished", ENCOUNTER_TRANSITIONS)
    return _enter(copy.deepcopy(encounter), encounter, "finished", now)


def participant_joined(
    encounter: JSONObject, who: str | None, display: str | None, now: datetime
) -> JSONObject:
    """Record that `who` ("Patient/1", "Practitioner/2"; None for a guest known by
    `display` only) joined the call at `now`.

    Fills the period of their planned entry, or adds an entry; unchanged if they already
    have an open period (webhooks arrive at least once). 422 on an ended Encounter.
    """
    _need_someone(who, display)
    if encounter.get("status") in _FINAL_ENCOUNTER:
        raise business_rule(
            f"Encounter/{encounter.get('id')} is {encounter.get('status')}: nobody can join it",
            "Encounter.status",
        )
    updated = copy.deepcopy(encounter)
    entries = _entries(updated, who, display)
    if any(_is_open(entry) for entry in entries):
        return updated
    at = format_instant(now)
    planned = next((entry for entry in entries if "period" not in entry), None)
    if planned is not None:
        planned["period"] = {"start": at}
    else:
        entry = _participant(who, display)
        entry["period"] = {"start": at}
        updated.setdefault("participant", []).append(entry)
    return updated


def participant_left(
    encounter: JSONObject, who: str | None, display: str | None, now: datetime
) -> JSONObject:
    """Record that `who` left at `now`: their open period ends. Unchanged when they have
    none (a repeated or late webhook, or a visit already ended, which closed it)."""
    _need_someone(who, display)
    updated = copy.deepcopy(encounter)
    for entry in _entries(updated, who, display):
        if _is_open(entry):
            entry["period"]["end"] = format_instant(now)
    return updated


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


# --- Appointment helpers ---------------------------------------------------------------


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


# --- Encounter helpers -----------------------------------------------------------------


def _new_encounter(appointment: JSONObject, now: datetime) -> JSONObject:
    encounter: JSONObject = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": VR_CLASS.to_json(),
    }
    service_types = appointment.get("serviceType")
    if isinstance(service_types, list) and service_types:
        encounter["serviceType"] = copy.deepcopy(service_types[0])
    patient = patient_reference(appointment)
    if patient is not None:
        encounter["subject"] = {"reference": patient}
    if appointment.get("basedOn"):
        encounter["basedOn"] = copy.deepcopy(appointment["basedOn"])
    participants = []
    for planned in appointment.get("participant") or []:
        actor = planned.get("actor") if isinstance(planned, dict) else None
        who = local_reference(actor)
        if who is None or who.split("/")[0] not in _INDIVIDUAL_TYPES | {"Patient"}:
            continue
        display = actor.get("display") if isinstance(actor, dict) else None
        entry = _participant(who, display if isinstance(display, str) else None)
        if planned.get("type"):
            entry = {"type": copy.deepcopy(planned["type"]), **entry}
        participants.append(entry)
    if participants:
        encounter["participant"] = participants
    encounter["appointment"] = [{"reference": f"Appointment/{appointment.get('id')}"}]
    encounter["period"] = {"start": format_instant(now)}
    for key in ("reasonCode", "reasonReference"):
        if appointment.get(key):
            encounter[key] = copy.deepcopy(appointment[key])
    return encounter


def _enter(encounter: JSONObject, old: JSONObject | None, status: str, now: datetime) -> JSONObject:
    """`encounter` (a copy the caller owns) moved to `status` at `now`."""
    at = format_instant(now)
    encounter["status"] = status
    if old is not None and isinstance(old.get("status"), str):
        history = encounter.setdefault("statusHistory", [])
        period: JSONObject = {}
        since = _since(old)
        if since is not None and since <= now:
            period["start"] = format_instant(since)
        period["end"] = at
        history.append({"status": old["status"], "period": period})
    period_ = encounter.setdefault("period", {})
    if status == "in-progress" and old is not None and old.get("status") == "planned":
        period_["start"] = at  # the plan's start gives way to the real one
    elif status == "in-progress":
        period_.setdefault("start", at)
    if status == "finished":
        period_.setdefault("end", at)
        for entry in encounter.get("participant") or []:
            if _is_open(entry):
                entry["period"]["end"] = period_["end"]
    if not period_:
        del encounter["period"]
    return encounter


def _since(old: JSONObject) -> datetime | None:
    """When the old status began: the end of the last history entry, else the start of the
    Encounter's period (for a planned Encounter that is the plan, not a status change)."""
    history = old.get("statusHistory")
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        return instant((history[-1].get("period") or {}).get("end"))
    if old.get("status") in {"planned", "unknown"}:
        return None
    return instant((old.get("period") or {}).get("start"))


def _participant(who: str | None, display: str | None) -> JSONObject:
    reference: JSONObject = {}
    if who is not None:
        reference["reference"] = who
    if display is not None:
        reference["display"] = display
    if who is not None and who.split("/")[0] in _INDIVIDUAL_TYPES:
        return {"individual": reference}
    return {"extension": [{"url": PARTICIPANT_ACTOR_URL, "valueReference": reference}]}


def _who(entry: JSONObject) -> JSONObject | None:
    individual = entry.get("individual")
    if isinstance(individual, dict):
        return individual
    for extension in entry.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == PARTICIPANT_ACTOR_URL:
            value = extension.get("valueReference")
            return value if isinstance(value, dict) else None
    return None


def _entries(encounter: JSONObject, who: str | None, display: str | None) -> list[JSONObject]:
    """The participant entries (live objects of `encounter`) that stand for `who`: the same
    reference, or for a guest without one the same display and no reference."""
    found = []
    for entry in encounter.get("participant") or []:
        reference = _who(entry) if isinstance(entry, dict) else None
        if reference is None:
            continue
        if who is not None:
            if local_reference(reference) == who:
                found.append(entry)
        elif "reference" not in reference and reference.get("display") == display:
            found.append(entry)
    return found


def _is_open(entry: JSONObject) -> bool:
    period = entry.get("period")
    return isinstance(period, dict) and "start" in period and "end" not in period


def _need_someone(who: str | None, display: str | None) -> None:
    if who is None and not display:
        raise ValueError("A participant needs a reference or a display name")


# --- shared ----------------------------------------------------------------------------


def _status(resource: JSONObject, kind: str, known: tuple[str, ...]) -> str:
    status = resource.get("status")
    if status not in known:
        raise business_rule(f"{kind}.status must be one of {', '.join(known)}", f"{kind}.status")
    return str(status)


def _refused(
    kind: str, before: str, after: str, table: Mapping[str, frozenset[str]]
) -> Unprocessable:
    allowed = sorted(table.get(before, frozenset()))
    then = f"from {before} it can become {', '.join(allowed)}" if allowed else "it is final"
    return business_rule(
        f"A virtual {kind} cannot go from {before} to {after}: {then}", f"{kind}.status"
    )


def business_rule(diagnostics: str, expression: str) -> Unprocessable:
    return Unprocessable(
        diagnostics, issues=[Issue(diagnostics, "business-rule", "error", expression)]
    )


def _id(resource: JSONObject) -> str:
    resource_id = resource.get("id")
    if not isinstance(resource_id, str):
        raise ValueError(f"A {resource.get('resourceType')} needs its id before its effects")
    return resource_id


def instant(value: object) -> datetime | None:
    """The first instant a dateTime denotes (None for none, or one that is no dateTime)."""
    if not isinstance(value, str):
        return None
    try:
        return date_range(value)[0]
    except FHIRError:
        return None
