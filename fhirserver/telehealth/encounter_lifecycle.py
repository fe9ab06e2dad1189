"""A virtual Encounter's side of the lifecycle (R4 encounter.html): the check of each
write against `lifecycle.ENCOUNTER_TRANSITIONS`, starting and ending the visit, and who
was in the call when.

Server-managed content: `statusHistory` is kept by the server: on a status change the
previous status is appended with its period. On a change to in-progress `period.start`
defaults to now (from planned it becomes now: a planned period is the plan); on a change
to finished `period.end` defaults to now and open participant periods close at
`period.end`, so a PUT and `$end-virtual-visit` leave the same record.

Participants (R4 encounter.html): `Encounter.participant.individual` admits Practitioner,
PractitionerRole and RelatedPerson only. A Patient or a guest known only by name who
joins is recorded with R5's `Encounter.participant.actor` as a cross-version extension
(`virtual_service.PARTICIPANT_ACTOR_URL`). Each stay in the call is one participant entry
with a `period`; a participant planned by the Appointment and not yet joined has no period.
"""

from __future__ import annotations

import copy
from datetime import datetime

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.resources.references import local_reference
from fhirserver.telehealth.lifecycle import (
    FINAL_ENCOUNTER,
    STARTABLE,
    Checked,
    CloseVisit,
    Effect,
    allowed,
    business_rule,
    checked_transition,
    effect_subject,
    instant,
    refused,
)
from fhirserver.telehealth.virtual_service import (
    PARTICIPANT_ACTOR_URL,
    VR_CLASS,
    is_virtual,
    patient_reference,
)

# R4 Encounter.participant.individual: Reference(Practitioner | PractitionerRole | RelatedPerson).
_INDIVIDUAL_TYPES = frozenset({"Practitioner", "PractitionerRole", "RelatedPerson"})


def check_encounter(old: JSONObject | None, new: JSONObject, *, now: datetime) -> Checked:
    """Check a create (`old` None) or update of an Encounter; see the module docstring.

    Raises `Unprocessable` (422, expression `Encounter.status`) for a transition the table
    does not allow; returns the Encounter with statusHistory, period and participant
    periods brought in line with its status, and `CloseVisit` when the visit ends.
    """
    if not (is_vr(new) or is_vr(old)):
        return Checked(new, ())
    before, status = checked_transition("Encounter", old, new)
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
    if status in FINAL_ENCOUNTER and before not in FINAL_ENCOUNTER:
        effects = (CloseVisit(effect_subject(resource)),)
    return Checked(resource, effects)


def is_vr(encounter: JSONObject | None) -> bool:
    """Whether an Encounter's class is v3-ActCode#VR (a virtual visit)."""
    return encounter is not None and VR_CLASS.matches(encounter.get("class"))


def is_startable(appointment: JSONObject, encounter: JSONObject | None = None) -> None:
    """Refuse (422) to start a visit for this Appointment (and its existing Encounter).

    Startable: a virtual Appointment in a `STARTABLE` status (fulfilled among them: the
    visit was started before, or a client marked it so); with an Encounter, that
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
    if encounter.get("status") in FINAL_ENCOUNTER:
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
    if not isinstance(status, str) or not allowed("Encounter", status, "finished"):
        raise refused("Encounter", str(status), "finished")
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
    if encounter.get("status") in FINAL_ENCOUNTER:
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
            _close(entry["period"], format_instant(now))
    return updated


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
    # The clinic: the Appointment's Location participants become Encounter.location
    # (R4 encounter.html), so the visit topics' `location` filter finds the visit.
    locations = [
        who
        for planned in appointment.get("participant") or []
        if isinstance(planned, dict)
        and (who := local_reference(planned.get("actor"))) is not None
        and who.startswith("Location/")
    ]
    if locations:
        encounter["location"] = [{"location": {"reference": who}} for who in locations]
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
                _close(entry["period"], period_["end"])
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


def _close(period: JSONObject, end: str) -> None:
    """End an open period at `end`, or at its start if `end` comes before it (an event
    delivered late and stamped earlier): a period never ends before it starts (per-1)."""
    start = period.get("start")
    period["end"] = start if isinstance(start, str) and _instant(end) < _instant(start) else end


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _is_open(entry: JSONObject) -> bool:
    period = entry.get("period")
    return isinstance(period, dict) and "start" in period and "end" not in period


def _need_someone(who: str | None, display: str | None) -> None:
    if who is None and not display:
        raise ValueError("A participant needs a reference or a display name")
