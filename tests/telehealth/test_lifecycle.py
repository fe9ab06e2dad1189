"""The virtual visit's transition tables (R4 valueset-appointmentstatus,
valueset-encounter-status): their content, and every allowed and refused change of status
as the Appointment and Encounter checks apply them."""

from __future__ import annotations

import pytest

from fhirserver.telehealth.appointment_lifecycle import check_appointment
from fhirserver.telehealth.encounter_lifecycle import check_encounter
from fhirserver.telehealth.lifecycle import (
    APPOINTMENT_STATUSES,
    APPOINTMENT_TRANSITIONS,
    ENCOUNTER_STATUSES,
    ENCOUNTER_TRANSITIONS,
)
from fhirserver.telehealth.virtual_service import VR_CLASS
from tests.telehealth.lifecycle_samples import (
    LATER,
    appointment,
    encounter,
    refused,
)


def appointment_pairs(allowed: bool) -> list[tuple[str, str]]:
    return [
        (a, b)
        for a in APPOINTMENT_STATUSES
        for b in APPOINTMENT_STATUSES
        if a != b and (b in APPOINTMENT_TRANSITIONS[a]) == allowed
    ]


def encounter_pairs(allowed: bool) -> list[tuple[str, str]]:
    return [
        (a, b)
        for a in ENCOUNTER_STATUSES
        for b in ENCOUNTER_STATUSES
        if a != b and (b in ENCOUNTER_TRANSITIONS[a]) == allowed
    ]


# --- The transition tables ---------------------------------------------------------------


def test_the_appointment_table() -> None:
    assert set(APPOINTMENT_STATUSES) == set(APPOINTMENT_TRANSITIONS)
    for before in ("proposed", "pending", "waitlist"):
        assert {"booked", "cancelled", "entered-in-error"} <= APPOINTMENT_TRANSITIONS[before]
        assert (
            not {"arrived", "checked-in", "fulfilled", "noshow"} & APPOINTMENT_TRANSITIONS[before]
        )
    assert APPOINTMENT_TRANSITIONS["booked"] == {
        "arrived",
        "checked-in",
        "fulfilled",
        "cancelled",
        "noshow",
        "entered-in-error",
    }
    for before in ("arrived", "checked-in"):
        assert {"fulfilled", "cancelled", "noshow", "entered-in-error"} <= (
            APPOINTMENT_TRANSITIONS[before]
        )
        assert "booked" not in APPOINTMENT_TRANSITIONS[before]
    for final in ("fulfilled", "cancelled", "noshow"):
        assert APPOINTMENT_TRANSITIONS[final] == {"entered-in-error"}
    assert APPOINTMENT_TRANSITIONS["entered-in-error"] == frozenset()


def test_the_encounter_table() -> None:
    assert set(ENCOUNTER_STATUSES) == set(ENCOUNTER_TRANSITIONS)
    assert ENCOUNTER_TRANSITIONS["in-progress"] == {"onleave", "finished", "entered-in-error"}
    for final in ("finished", "cancelled"):
        assert ENCOUNTER_TRANSITIONS[final] == {"entered-in-error"}
    assert ENCOUNTER_TRANSITIONS["entered-in-error"] == frozenset()
    assert ENCOUNTER_TRANSITIONS["unknown"] == set(ENCOUNTER_STATUSES) - {"unknown"}


@pytest.mark.parametrize(("before", "after"), appointment_pairs(allowed=True))
def test_allowed_appointment_transition(before: str, after: str) -> None:
    result = check_appointment(appointment(before), appointment(after))
    assert result.resource["status"] == after


@pytest.mark.parametrize(("before", "after"), appointment_pairs(allowed=False))
def test_illegal_appointment_transition_is_422_on_status(before: str, after: str) -> None:
    error = refused(check_appointment, appointment(before), appointment(after))
    (issue,) = error.issues
    assert issue.expression == "Appointment.status"
    assert issue.code == "business-rule"
    assert f"from {before} to {after}" in issue.diagnostics


@pytest.mark.parametrize("status", APPOINTMENT_STATUSES)
def test_same_status_is_an_update_of_other_fields(status: str) -> None:
    result = check_appointment(appointment(status), appointment(status, comment="moved"))
    assert result.resource["comment"] == "moved"


@pytest.mark.parametrize("status", APPOINTMENT_STATUSES)
def test_a_virtual_appointment_may_be_created_in_any_status(status: str) -> None:
    assert check_appointment(None, appointment(status)).resource["status"] == status


@pytest.mark.parametrize(("before", "after"), [("fulfilled", "booked"), ("cancelled", "booked")])
def test_ordinary_appointments_are_left_free(before: str, after: str) -> None:
    new = appointment(after, service=None)
    result = check_appointment(appointment(before, service=None), new)
    assert result.resource is new and result.effects == ()


def test_an_unknown_status_is_422() -> None:
    error = refused(check_appointment, appointment(), appointment("in-progress"))
    assert error.issues[0].expression == "Appointment.status"


@pytest.mark.parametrize(("before", "after"), encounter_pairs(allowed=True))
def test_allowed_encounter_transition(before: str, after: str) -> None:
    result = check_encounter(encounter(before), encounter(after), now=LATER)
    assert result.resource["status"] == after


@pytest.mark.parametrize(("before", "after"), encounter_pairs(allowed=False))
def test_illegal_encounter_transition_is_422_on_status(before: str, after: str) -> None:
    error = refused(check_encounter, encounter(before), encounter(after), now=LATER)
    (issue,) = error.issues
    assert issue.expression == "Encounter.status"
    assert issue.code == "business-rule"
    assert f"from {before} to {after}" in issue.diagnostics


def test_ordinary_encounters_are_left_free() -> None:
    ambulatory = {"system": VR_CLASS.system, "code": "AMB"}
    new = encounter("in-progress", **{"class": ambulatory})
    result = check_encounter(encounter("finished", **{"class": ambulatory}), new, now=LATER)
    assert result.resource is new and result.effects == ()
