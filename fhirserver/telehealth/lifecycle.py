"""The virtual visit's state machine (README "Telehealth" / "Lifecycle"): its transition
tables, the effects a transition implies, and the one check of a status change against
its table. tests/telehealth/test_readme_lifecycle.py holds the README's table to these.

Pure: no I/O and no storage. The callers (the write rules, the operations, the jobs,
webhook handling) read, call the checks in `appointment_lifecycle.py` and
`encounter_lifecycle.py`, and write the results with the effects recorded in the same
unit of work (DESIGN.md "Side effects and external calls").

Statuses are R4's (R4 valueset-appointmentstatus, valueset-encounter-status). There is no
`in-progress` Appointment: once the visit starts the Appointment is `fulfilled` ("the
encounter resource will exist and will track further status changes") and the live visit
is the Encounter's `in-progress`.

Which resources are managed
- An Appointment is managed when it carries the virtual-service extension (before or
  after the write). Ordinary Appointments are left to their clients: any status change
  is accepted and no effect follows, as the server has no room to keep in step.
- An Encounter is managed when its `class` is v3-ActCode#VR (before or after the write).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import NamedTuple

from fhirserver.errors import FHIRError, Issue, Unprocessable
from fhirserver.resources.codec import JSONObject
from fhirserver.search.time import date_range

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
#: Appointment statuses of a visit called off: they dispose of its room.
CALLED_OFF = frozenset({"cancelled", "noshow", "entered-in-error"})
#: From each Appointment status, the other statuses it may become. A status may always
#: stay the same (an update of other fields), and a create may use any status; once
#: fulfilled, cancelled or noshow the only way on is a correction to entered-in-error.
APPOINTMENT_TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        **{
            s: (_BEFORE_BOOKING - {s}) | {"booked", "cancelled", "entered-in-error"}
            for s in _BEFORE_BOOKING
        },
        "booked": frozenset({"arrived", "checked-in", "fulfilled"}) | CALLED_OFF,
        "arrived": frozenset({"checked-in", "fulfilled"}) | CALLED_OFF,
        "checked-in": frozenset({"fulfilled"}) | CALLED_OFF,
        "fulfilled": frozenset({"entered-in-error"}),
        "cancelled": frozenset({"entered-in-error"}),
        "noshow": frozenset({"entered-in-error"}),
        "entered-in-error": frozenset(),
    }
)
#: Encounter statuses of a visit that is over: nobody joins it, and it does not restart.
FINAL_ENCOUNTER = frozenset({"finished", "cancelled", "entered-in-error"})
#: From each status of a virtual Encounter, the other statuses it may become (staying the
#: same is always allowed). R4 `cancelled` means "ended before it has begun", so a visit
#: that is in progress ends as `finished` (or is corrected to `entered-in-error`), never
#: `cancelled`; from `unknown` anything goes (the real status became known).
ENCOUNTER_TRANSITIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "planned": frozenset(
            {"arrived", "triaged", "in-progress", "cancelled", "entered-in-error"}
        ),
        "arrived": frozenset({"triaged", "in-progress", "cancelled", "entered-in-error"}),
        "triaged": frozenset({"in-progress", "cancelled", "entered-in-error"}),
        "in-progress": frozenset({"onleave", "finished", "entered-in-error"}),
        "onleave": frozenset({"in-progress", "finished", "entered-in-error"}),
        "finished": frozenset({"entered-in-error"}),
        "cancelled": frozenset({"entered-in-error"}),
        "entered-in-error": frozenset(),
        "unknown": frozenset(ENCOUNTER_STATUSES) - {"unknown"},
    }
)
_STATUSES = MappingProxyType({"Appointment": APPOINTMENT_STATUSES, "Encounter": ENCOUNTER_STATUSES})
_TRANSITIONS = MappingProxyType(
    {"Appointment": APPOINTMENT_TRANSITIONS, "Encounter": ENCOUNTER_TRANSITIONS}
)

#: Appointment statuses in which a virtual Appointment has (or is getting) a room.
ROOM_STATUSES = frozenset({"booked", "arrived", "checked-in"})
#: Appointment statuses from which `$start-virtual-visit` may start the visit.
STARTABLE = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
DEFAULT_NO_SHOW_GRACE = timedelta(minutes=15)


@dataclass(frozen=True)
class ProvisionRoom:
    """Create the Appointment's room at the provider and write its join details."""

    appointment_id: str


@dataclass(frozen=True)
class DisposeRoom:
    """Close the room of an Appointment that will not take place; its code stops working."""

    appointment_id: str


@dataclass(frozen=True)
class CloseVisit:
    """Close the room of the visit whose Encounter ended."""

    encounter_id: str


@dataclass(frozen=True)
class ScheduleNoShowCheck:
    """At `at` (start + grace), mark the Appointment `noshow` if it is still booked; the
    check re-reads it then (`appointment_lifecycle.no_show_due`)."""

    appointment_id: str
    at: datetime


#: What a transition asks for: returned by the checks, not performed by them.
Effect = ProvisionRoom | DisposeRoom | CloseVisit | ScheduleNoShowCheck


class Checked(NamedTuple):
    """A write that passed: the resource to store (server-managed parts restored) and the
    effects to record with it."""

    resource: JSONObject
    effects: tuple[Effect, ...]


def checked_transition(
    kind: str, old: JSONObject | None, new: JSONObject
) -> tuple[str | None, str]:
    """`(status before, status after)` of a write of a managed `kind` ("Appointment",
    "Encounter"); before is None on a create. Raises `Unprocessable` (422, issue
    business-rule, expression `{kind}.status`) for an unknown status, or a change of
    status its table does not allow."""
    known = _STATUSES[kind]
    status = new.get("status")
    if status not in known:
        raise business_rule(f"{kind}.status must be one of {', '.join(known)}", f"{kind}.status")
    after = str(status)
    before = old.get("status") if old is not None else None
    if before is not None and before != after and not allowed(kind, before, after):
        raise refused(kind, before, after)
    return before, after


def allowed(kind: str, before: str, after: str) -> bool:
    """Whether `kind`'s table lets `before` become `after` (another status)."""
    return after in _TRANSITIONS[kind].get(before, frozenset())


def refused(kind: str, before: str, after: str) -> Unprocessable:
    """The 422 for a change of status `kind`'s table does not allow, naming what is."""
    permitted = sorted(_TRANSITIONS[kind].get(before, frozenset()))
    then = f"from {before} it can become {', '.join(permitted)}" if permitted else "it is final"
    return business_rule(
        f"A virtual {kind} cannot go from {before} to {after}: {then}", f"{kind}.status"
    )


def business_rule(diagnostics: str, expression: str) -> Unprocessable:
    return Unprocessable(
        diagnostics, issues=[Issue(diagnostics, "business-rule", "error", expression)]
    )


def effect_subject(resource: JSONObject) -> str:
    """The id an effect names: a resource needs its id before effects can follow."""
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
