"""Sample virtual Appointments and Encounters (R4 JSON dicts) for the lifecycle's tests:
one visit, Appointment a1 of Patient p1 with Practitioner d1, at START."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirserver.errors import Unprocessable
from fhirserver.telehealth.virtual_service import (
    VR_CLASS,
    VirtualService,
    channel_type,
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
