"""A virtual Appointment's lifecycle (README "Lifecycle" rows; R4 appointment.html): the
effects of booking, calling off and no-shows, the waiting room, and the server-managed
parts of the virtual-service extension."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from fhirserver.telehealth.appointment_lifecycle import (
    check_appointment,
    no_show_due,
    patient_arrived,
)
from fhirserver.telehealth.lifecycle import (
    APPOINTMENT_TRANSITIONS,
    DEFAULT_NO_SHOW_GRACE,
    DisposeRoom,
    ProvisionRoom,
    ScheduleNoShowCheck,
)
from fhirserver.telehealth.virtual_service import (
    VirtualService,
    channel_type,
    virtual_service,
)
from tests.telehealth.lifecycle_samples import (
    BOOKED_SERVICE,
    ROOM,
    START,
    appointment,
    refused,
)

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
