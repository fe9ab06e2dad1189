"""A virtual Encounter's lifecycle (README "Lifecycle" rows; R4 encounter.html: status,
statusHistory, participant.period, class VR): starting and ending the visit, and who was
in the call when."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

import pytest

from fhirserver.resources.validate import validate
from fhirserver.telehealth.appointment_lifecycle import check_appointment
from fhirserver.telehealth.encounter_lifecycle import (
    check_encounter,
    end_visit,
    is_startable,
    participant_joined,
    participant_left,
    start_visit,
)
from fhirserver.telehealth.lifecycle import CloseVisit
from fhirserver.telehealth.virtual_service import (
    PARTICIPANT_ACTOR_URL,
    VR_CLASS,
)
from tests.telehealth.lifecycle_samples import (
    LATER,
    NOW,
    appointment,
    encounter,
    refused,
    stamp,
)

# --- Row: $start-virtual-visit -----------------------------------------------------------


def test_start_creates_the_encounter_and_fulfils_the_appointment() -> None:
    booked = appointment("arrived")
    before = copy.deepcopy(booked)
    fulfilled, visit = start_visit(booked, None, NOW)
    assert booked == before
    assert fulfilled["status"] == "fulfilled"
    assert check_appointment(booked, fulfilled).effects == ()
    assert visit["status"] == "in-progress"
    assert visit["class"] == VR_CLASS.to_json()
    assert visit["appointment"] == [{"reference": "Appointment/a1"}]
    assert visit["subject"] == {"reference": "Patient/p1"}
    assert visit["period"] == {"start": stamp(NOW)}
    assert visit["serviceType"] == {"text": "Follow-up"}
    assert visit["reasonCode"] == [{"text": "Blood pressure review"}]
    assert "id" not in visit and "statusHistory" not in visit
    doctor, patient = visit["participant"]
    assert doctor["individual"] == {"reference": "Practitioner/d1", "display": "Dr Who"}
    assert doctor["type"] == booked["participant"][0]["type"]
    assert patient == {
        "extension": [
            {
                "url": PARTICIPANT_ACTOR_URL,
                "valueReference": {"reference": "Patient/p1", "display": "Ann"},
            }
        ]
    }
    assert validate(visit) == "Encounter"
    assert validate(fulfilled) == "Appointment"


def test_start_adds_the_practitioner_who_starts() -> None:
    _, visit = start_visit(
        appointment(), None, NOW, practitioner="PractitionerRole/r1", practitioner_display="Dr R"
    )
    assert visit["participant"][-1] == {
        "individual": {"reference": "PractitionerRole/r1", "display": "Dr R"}
    }
    _, again = start_visit(appointment(), None, NOW, practitioner="Practitioner/d1")
    assert len(again["participant"]) == 2


def test_start_again_reuses_the_encounter_unchanged() -> None:
    fulfilled, visit = start_visit(appointment(), None, NOW)
    visit["id"] = "e1"
    again_appointment, again_visit = start_visit(fulfilled, visit, LATER)
    assert again_appointment == fulfilled and again_visit == visit


def test_start_moves_a_planned_encounter_to_in_progress() -> None:
    planned = encounter("planned")
    del planned["period"]
    _, visit = start_visit(appointment(), planned, NOW)
    assert visit["status"] == "in-progress"
    assert visit["period"] == {"start": stamp(NOW)}
    assert visit["statusHistory"] == [{"status": "planned", "period": {"end": stamp(NOW)}}]
    checked = check_encounter(planned, visit, now=NOW)
    assert checked.resource == visit and checked.effects == ()


def test_a_planned_period_gives_way_to_the_real_start() -> None:
    planned = encounter("planned", period={"start": "2026-11-21T09:30:00Z"})
    _, visit = start_visit(appointment(), planned, NOW)
    assert visit["period"] == {"start": stamp(NOW)}
    assert visit["statusHistory"] == [{"status": "planned", "period": {"end": stamp(NOW)}}]
    arrived = encounter("arrived", period={"start": "2026-11-21T09:30:00Z"})
    _, visit = start_visit(appointment(), arrived, NOW)
    assert visit["period"] == {"start": "2026-11-21T09:30:00Z"}
    assert visit["statusHistory"] == [
        {"status": "arrived", "period": {"start": "2026-11-21T09:30:00.000000Z", "end": stamp(NOW)}}
    ]


@pytest.mark.parametrize("status", ["proposed", "pending", "waitlist", "cancelled", "noshow"])
def test_start_refuses_an_appointment_not_on(status: str) -> None:
    error = refused(start_visit, appointment(status), None, NOW)
    assert error.issues[0].expression == "Appointment.status"
    assert error.issues[0].code == "business-rule"


def test_start_refuses_an_ordinary_appointment() -> None:
    error = refused(is_startable, appointment(service=None))
    assert error.issues[0].expression == "Appointment.extension"


@pytest.mark.parametrize("status", ["finished", "cancelled", "entered-in-error"])
def test_start_refuses_a_visit_that_ended(status: str) -> None:
    error = refused(start_visit, appointment("fulfilled"), encounter(status), NOW)
    assert error.issues[0].expression == "Encounter.status"


def test_start_refuses_an_encounter_that_is_not_virtual() -> None:
    ambulatory = encounter(**{"class": {"system": VR_CLASS.system, "code": "AMB"}})
    error = refused(start_visit, appointment(), ambulatory, NOW)
    assert error.issues[0].expression == "Encounter.class"


def test_start_refuses_something_else() -> None:
    refused(is_startable, encounter())


# --- Row: the Encounter becomes finished -------------------------------------------------


def visit_with_people() -> dict[str, Any]:
    return encounter(
        "in-progress",
        participant=[
            {"individual": {"reference": "Practitioner/d1"}, "period": {"start": stamp(NOW)}},
            {
                "individual": {"reference": "Practitioner/d2"},
                "period": {"start": stamp(NOW), "end": stamp(NOW + timedelta(minutes=5))},
            },
            {"individual": {"reference": "RelatedPerson/r1"}},
        ],
    )


def assert_ended(done: dict[str, Any], at: datetime) -> None:
    assert done["status"] == "finished"
    assert done["period"] == {"start": stamp(NOW), "end": stamp(at)}
    periods = [p.get("period") for p in done["participant"]]
    assert periods == [
        {"start": stamp(NOW), "end": stamp(at)},
        {"start": stamp(NOW), "end": stamp(NOW + timedelta(minutes=5))},
        None,
    ]
    assert done["statusHistory"] == [
        {"status": "in-progress", "period": {"start": stamp(NOW), "end": stamp(at)}}
    ]
    assert validate(done) == "Encounter"


def test_put_finished_closes_the_visit() -> None:
    live = visit_with_people()
    result = check_encounter(live, {**live, "status": "finished"}, now=LATER)
    assert_ended(result.resource, LATER)
    assert result.effects == (CloseVisit("e1"),)


def test_end_visit_closes_the_visit_the_same_way() -> None:
    live = visit_with_people()
    done = end_visit(live, LATER)
    assert_ended(done, LATER)
    assert live["status"] == "in-progress"
    assert check_encounter(live, done, now=LATER).resource == done


def test_a_period_end_the_client_gave_is_kept() -> None:
    live = visit_with_people()
    given = stamp(LATER - timedelta(minutes=1))
    result = check_encounter(
        live,
        {**live, "status": "finished", "period": {"start": stamp(NOW), "end": given}},
        now=LATER,
    )
    assert result.resource["period"]["end"] == given
    assert result.resource["participant"][0]["period"]["end"] == given


def test_end_visit_twice_changes_nothing() -> None:
    done = end_visit(visit_with_people(), LATER)
    assert end_visit(done, LATER + timedelta(hours=1)) == done


def test_end_visit_from_onleave() -> None:
    assert end_visit(encounter("onleave"), LATER)["status"] == "finished"


@pytest.mark.parametrize("status", ["planned", "cancelled", "entered-in-error"])
def test_end_visit_refuses_a_visit_that_cannot_finish(status: str) -> None:
    error = refused(end_visit, encounter(status), LATER)
    assert error.issues[0].expression == "Encounter.status"


def test_end_visit_refuses_an_ordinary_encounter() -> None:
    error = refused(end_visit, encounter(**{"class": {"code": "AMB"}}), LATER)
    assert error.issues[0].expression == "Encounter.class"


@pytest.mark.parametrize("before", ["in-progress", "onleave"])
def test_a_live_visit_corrected_to_error_is_closed_too(before: str) -> None:
    result = check_encounter(encounter(before), encounter("entered-in-error"), now=LATER)
    assert result.effects == (CloseVisit("e1"),)


def test_a_finished_visit_corrected_to_error_closes_nothing_again() -> None:
    result = check_encounter(encounter("finished"), encounter("entered-in-error"), now=LATER)
    assert result.effects == ()


def test_status_history_is_the_servers() -> None:
    old = encounter("in-progress")
    forged = {**old, "status": "onleave", "statusHistory": [{"status": "planned", "period": {}}]}
    result = check_encounter(old, forged, now=LATER)
    assert result.resource["statusHistory"] == [
        {"status": "in-progress", "period": {"start": stamp(NOW), "end": stamp(LATER)}}
    ]
    back = check_encounter(
        result.resource, {**result.resource, "status": "in-progress"}, now=LATER + timedelta(1)
    )
    assert back.resource["statusHistory"][-1] == {
        "status": "onleave",
        "period": {"start": stamp(LATER), "end": stamp(LATER + timedelta(1))},
    }


def test_an_update_without_status_change_keeps_the_history() -> None:
    old = encounter("in-progress", statusHistory=[{"status": "planned", "period": {"end": "x"}}])
    new = {**old, "statusHistory": []}
    new.pop("statusHistory")
    assert check_encounter(old, new, now=LATER).resource["statusHistory"] == old["statusHistory"]


def test_creating_an_in_progress_visit_starts_its_period() -> None:
    new = encounter("in-progress")
    del new["period"]
    result = check_encounter(None, new, now=NOW)
    assert result.resource["period"] == {"start": stamp(NOW)}
    assert "statusHistory" not in result.resource and result.effects == ()


# --- Participants ------------------------------------------------------------------------


def test_a_planned_participant_joining_gets_a_period() -> None:
    _, visit = start_visit(appointment(), None, NOW)
    joined = participant_joined(visit, "Patient/p1", "Ann", NOW)
    assert joined["participant"][1]["period"] == {"start": stamp(NOW)}
    assert "period" not in visit["participant"][1]
    assert validate(joined) == "Encounter"


def test_joining_twice_records_one_stay() -> None:
    once = participant_joined(encounter(), "Practitioner/d1", None, NOW)
    assert participant_joined(once, "Practitioner/d1", None, LATER) == once
    assert once["participant"] == [
        {"individual": {"reference": "Practitioner/d1"}, "period": {"start": stamp(NOW)}}
    ]


def test_leaving_closes_the_stay_and_rejoining_adds_another() -> None:
    joined = participant_joined(encounter(), "Patient/p1", None, NOW)
    left = participant_left(joined, "Patient/p1", None, NOW + timedelta(minutes=3))
    assert left["participant"][0]["period"] == {
        "start": stamp(NOW),
        "end": stamp(NOW + timedelta(minutes=3)),
    }
    assert left["participant"][0]["extension"][0]["url"] == PARTICIPANT_ACTOR_URL
    back = participant_joined(left, "Patient/p1", None, LATER)
    assert [p["period"] for p in back["participant"]] == [
        left["participant"][0]["period"],
        {"start": stamp(LATER)},
    ]


def test_leaving_without_a_stay_changes_nothing() -> None:
    visit = encounter(participant=[{"individual": {"reference": "Practitioner/d1"}}])
    assert participant_left(visit, "Practitioner/d1", None, NOW) == visit
    assert participant_left(visit, "Patient/p9", None, NOW) == visit


def test_a_guest_is_known_by_name() -> None:
    joined = participant_joined(encounter(), None, "Uncle Bob", NOW)
    assert joined["participant"] == [
        {
            "extension": [
                {"url": PARTICIPANT_ACTOR_URL, "valueReference": {"display": "Uncle Bob"}}
            ],
            "period": {"start": stamp(NOW)},
        }
    ]
    left = participant_left(joined, None, "Uncle Bob", LATER)
    assert left["participant"][0]["period"]["end"] == stamp(LATER)
    assert participant_left(joined, None, "Aunt May", LATER) == joined


def test_nobody_joins_an_ended_visit() -> None:
    error = refused(participant_joined, encounter("finished"), "Patient/p1", None, LATER)
    assert error.issues[0].expression == "Encounter.status"


def test_a_participant_needs_a_reference_or_a_name() -> None:
    with pytest.raises(ValueError):
        participant_joined(encounter(), None, None, NOW)
