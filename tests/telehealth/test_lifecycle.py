"""The virtual visit's state machine (issue "Lifecycle" table) over R4 Appointment
(appointment.html, valueset-appointmentstatus) and Encounter (encounter.html: status,
statusHistory, participant.period, class VR) dicts: allowed and refused transitions,
the effects each implies, server-managed content, and the visit helpers."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver.errors import Unprocessable
from fhirserver.resources.validate import validate
from fhirserver.telehealth.lifecycle import (
    APPOINTMENT_STATUSES,
    APPOINTMENT_TRANSITIONS,
    DEFAULT_NO_SHOW_GRACE,
    ENCOUNTER_STATUSES,
    ENCOUNTER_TRANSITIONS,
    CloseVisit,
    DisposeRoom,
    ProvisionRoom,
    ScheduleNoShowCheck,
    check_appointment,
    check_encounter,
    end_visit,
    is_startable,
    no_show_due,
    participant_joined,
    participant_left,
    patient_arrived,
    start_visit,
)
from fhirserver.telehealth.virtual_service import (
    PARTICIPANT_ACTOR_URL,
    VR_CLASS,
    VirtualService,
    channel_type,
    virtual_service,
    with_virtual_service,
)

NOW = datetime(2026, 11, 21, 9, 58, tzinfo=UTC)
START = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=20)
BOOKED_SERVICE = VirtualService(channel_type=channel_type("jitsi"), max_participants=3)
ROOM = VirtualService(
    channel_type=channel_type("jitsi"),
    max_participants=3,
    address="https://meet.example/fhirserver-a1",
    session_key="fhirserver-a1",
    meeting_code="K7PX3MWQ9C",
)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def appointment(
    status: str = "booked", service: VirtualService | None = ROOM, **fields: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": status,
        "serviceType": [{"text": "Follow-up"}],
        "reasonCode": [{"text": "Blood pressure review"}],
        "start": "2026-11-21T10:00:00Z",
        "end": "2026-11-21T10:30:00Z",
        "participant": [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "PPRF",
                            }
                        ]
                    }
                ],
                "actor": {"reference": "Practitioner/d1", "display": "Dr Who"},
                "status": "accepted",
            },
            {"actor": {"reference": "Patient/p1", "display": "Ann"}, "status": "accepted"},
            {"actor": {"reference": "Location/l1"}, "status": "accepted"},
        ],
    }
    resource.update(fields)
    return with_virtual_service(resource, service) if service is not None else resource


def encounter(status: str = "in-progress", **fields: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": status,
        "class": VR_CLASS.to_json(),
        "subject": {"reference": "Patient/p1"},
        "appointment": [{"reference": "Appointment/a1"}],
        "period": {"start": stamp(NOW)},
    }
    resource.update(fields)
    return resource


def refused(call: Any, *args: Any, **kwargs: Any) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 422
    return caught.value


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


# --- Row: a virtual Appointment becomes booked -------------------------------------------


def test_booked_on_create_provisions_a_room_and_schedules_the_no_show_check() -> None:
    result = check_appointment(None, appointment("booked", service=BOOKED_SERVICE))
    assert result.effects == (
        ProvisionRoom("a1"),
        ScheduleNoShowCheck("a1", START + DEFAULT_NO_SHOW_GRACE),
    )


@pytest.mark.parametrize("before", ["proposed", "pending", "waitlist"])
def test_becoming_booked_on_update_provisions_a_room(before: str) -> None:
    result = check_appointment(
        appointment(before, service=BOOKED_SERVICE),
        appointment("booked", service=BOOKED_SERVICE),
        no_show_grace=timedelta(minutes=5),
    )
    assert result.effects == (
        ProvisionRoom("a1"),
        ScheduleNoShowCheck("a1", START + timedelta(minutes=5)),
    )


def test_an_ordinary_booked_appointment_made_virtual_gets_a_room() -> None:
    result = check_appointment(
        appointment("booked", service=None), appointment("booked", service=BOOKED_SERVICE)
    )
    assert ProvisionRoom("a1") in result.effects


def test_booked_without_start_has_no_no_show_check() -> None:
    new = appointment("booked", service=BOOKED_SERVICE)
    del new["start"], new["end"]
    assert check_appointment(None, new).effects == (ProvisionRoom("a1"),)


def test_updating_a_booked_appointment_provisions_nothing_again() -> None:
    assert (
        check_appointment(appointment("booked"), appointment("booked", comment="x")).effects == ()
    )


def test_moving_the_start_reschedules_the_no_show_check_only() -> None:
    result = check_appointment(
        appointment("booked"),
        appointment("booked", start="2026-11-21T11:00:00Z", end="2026-11-21T11:30:00Z"),
    )
    assert result.effects == (
        ScheduleNoShowCheck("a1", START + timedelta(hours=1) + DEFAULT_NO_SHOW_GRACE),
    )


@pytest.mark.parametrize("status", ["proposed", "pending", "waitlist"])
def test_not_yet_booked_has_no_room(status: str) -> None:
    assert check_appointment(None, appointment(status, service=BOOKED_SERVICE)).effects == ()


def test_effects_need_the_id() -> None:
    new = appointment("booked", service=BOOKED_SERVICE)
    del new["id"]
    with pytest.raises(ValueError):
        check_appointment(None, new)


# --- Row: the patient joins by code before the visit starts ------------------------------


def test_patient_joining_makes_a_booked_appointment_arrived() -> None:
    booked = appointment("booked")
    arrived = patient_arrived(booked)
    assert arrived["status"] == "arrived" and booked["status"] == "booked"
    assert check_appointment(booked, arrived).effects == ()


@pytest.mark.parametrize("status", ["arrived", "checked-in", "fulfilled"])
def test_patient_joining_again_changes_nothing(status: str) -> None:
    assert patient_arrived(appointment(status))["status"] == status


@pytest.mark.parametrize("status", ["proposed", "cancelled", "noshow", "entered-in-error"])
def test_patient_cannot_join_an_appointment_that_is_not_on(status: str) -> None:
    error = refused(patient_arrived, appointment(status))
    assert error.issues[0].expression == "Appointment.status"


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


# --- Row: cancelled, noshow or entered-in-error before the visit -------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (before, after)
        for before in ("booked", "arrived", "checked-in", "fulfilled")
        for after in ("cancelled", "noshow", "entered-in-error")
        if after in APPOINTMENT_TRANSITIONS[before]
    ],
)
def test_ending_an_appointment_with_a_room_disposes_it(before: str, after: str) -> None:
    result = check_appointment(appointment(before), appointment(after))
    assert result.effects == (DisposeRoom("a1"),)
    assert virtual_service(result.resource) == ROOM


@pytest.mark.parametrize("before", ["proposed", "pending", "waitlist"])
def test_cancelling_before_booking_disposes_nothing(before: str) -> None:
    old = appointment(before, service=BOOKED_SERVICE)
    assert check_appointment(old, appointment("cancelled", service=BOOKED_SERVICE)).effects == ()


def test_a_correction_after_cancelling_disposes_nothing_again() -> None:
    assert (
        check_appointment(appointment("cancelled"), appointment("entered-in-error")).effects == ()
    )


# --- Row: no patient joined within the grace period --------------------------------------


def test_no_show_is_due_only_after_the_grace_period() -> None:
    booked = appointment("booked")
    assert not no_show_due(booked, START + DEFAULT_NO_SHOW_GRACE - timedelta(seconds=1))
    assert no_show_due(booked, START + DEFAULT_NO_SHOW_GRACE)
    assert not no_show_due(booked, START + timedelta(minutes=4), timedelta(minutes=5))
    assert no_show_due(booked, START + timedelta(minutes=5), timedelta(minutes=5))


@pytest.mark.parametrize("status", ["arrived", "checked-in", "fulfilled", "cancelled"])
def test_no_show_is_not_due_once_the_patient_came_or_it_ended(status: str) -> None:
    assert not no_show_due(appointment(status), START + timedelta(days=1))


def test_no_show_is_not_due_for_ordinary_or_undated_appointments() -> None:
    later = START + timedelta(days=1)
    assert not no_show_due(appointment("booked", service=None), later)
    undated = appointment("booked")
    del undated["start"]
    assert not no_show_due(undated, later)


def test_marking_no_show_disposes_the_room() -> None:
    booked = appointment("booked")
    result = check_appointment(booked, {**booked, "status": "noshow"})
    assert result.effects == (DisposeRoom("a1"),)


# --- Server-managed content --------------------------------------------------------------


def test_a_client_cannot_set_server_parts_on_create() -> None:
    result = check_appointment(None, appointment("booked", service=ROOM))
    assert virtual_service(result.resource) == BOOKED_SERVICE


def test_a_client_cannot_change_server_parts_on_update() -> None:
    forged = VirtualService(
        channel_type=ROOM.channel_type,
        max_participants=5,
        address="https://evil.example/",
        meeting_code="AAAAAAAAAA",
    )
    result = check_appointment(appointment(), appointment(service=forged))
    kept = virtual_service(result.resource)
    assert kept is not None
    assert (kept.address, kept.session_key, kept.meeting_code) == (
        ROOM.address,
        ROOM.session_key,
        ROOM.meeting_code,
    )
    assert kept.max_participants == 5


def test_dropping_the_extension_gets_it_back() -> None:
    new = appointment(service=None, comment="edited by a client that knows no extensions")
    result = check_appointment(appointment(), new)
    assert virtual_service(result.resource) == ROOM
    assert result.resource["comment"] == new["comment"]


def test_an_unchanged_write_is_returned_as_is() -> None:
    new = appointment()
    assert check_appointment(appointment(), new).resource is new


def test_the_server_writes_its_parts() -> None:
    new = appointment(service=ROOM)
    result = check_appointment(appointment(service=BOOKED_SERVICE), new, server_write=True)
    assert virtual_service(result.resource) == ROOM


def test_channel_type_is_fixed_once_the_room_exists() -> None:
    moved = VirtualService(channel_type=channel_type("livekit"))
    error = refused(check_appointment, appointment(), appointment(service=moved))
    assert error.issues[0].expression == "Appointment.extension"
    result = check_appointment(
        appointment("pending", service=BOOKED_SERVICE), appointment("pending", service=moved)
    )
    assert virtual_service(result.resource) == moved
    named = replace(ROOM, channel_type=replace(channel_type("jitsi"), display="Jitsi Meet"))
    assert check_appointment(appointment(), appointment(service=named)).effects == ()


def test_an_extension_of_server_parts_only_is_refused() -> None:
    only_server = VirtualService(meeting_code="AAAAAAAAAA")
    error = refused(check_appointment, None, appointment(service=only_server))
    assert error.issues[0].expression == "Appointment.extension"


def test_a_malformed_extension_is_refused() -> None:
    new = appointment()
    new["extension"][0]["extension"].append({"url": "roomName", "valueString": "x"})
    error = refused(check_appointment, appointment(), new)
    assert error.issues[0].expression == "Appointment.extension[0].extension[5]"


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
