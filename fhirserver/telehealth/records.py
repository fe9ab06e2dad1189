"""The visit's records in the store, for the operations, the join endpoint, the webhooks
and the jobs: finding an Appointment or its visit's Encounter, loading, saving and
creating through the write path (so the lifecycle's write rules run on every write),
the AuditEvents (audit.py), and the server's own write of a room.

The rule the callers keep (DESIGN.md "Side effects and external calls"): a provider is
called only when no unit of work is open, and every write re-reads what it changes inside
its unit, so two callers at once (two server processes, a retry and its original) end in
one room, one Encounter and one meeting code.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from fhirserver.errors import Gone
from fhirserver.interactions import crud
from fhirserver.interactions.preconditions import NO_PRECONDITIONS
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Reader, UnitOfWork, Version
from fhirserver.telehealth import codes
from fhirserver.telehealth.audit import audit_event
from fhirserver.telehealth.context import VisitContext, join_url
from fhirserver.telehealth.encounter_lifecycle import is_vr
from fhirserver.telehealth.lifecycle import FINAL_ENCOUNTER, ROOM_STATUSES
from fhirserver.telehealth.providers import Room
from fhirserver.telehealth.virtual_service import (
    is_virtual,
    patient_reference,
    virtual_service,
    with_virtual_service,
)

#: The longest display name the server records for a participant.
MAX_DISPLAY = 80


async def find(
    reader: Reader, resource_type: str, criteria: list[tuple[str, str]], limit: int
) -> list[Version]:
    """Search with exact values: `\\ , | $` in them are escaped (R4 search.html#escaping),
    so a value from outside (a webhook's room name) cannot add search syntax."""
    escaped = [(name, _escape(value)) for name, value in criteria]
    query = parse_search((resource_type,), [*escaped, ("_count", str(limit))], strict=True)
    return (await reader.search(query)).matches


async def find_identifier(
    reader: Reader, resource_type: str, system: str, value: str
) -> list[Version]:
    """The resource with this identifier (`identifier=system|value`, each part escaped)."""
    token = f"{_escape(system)}|{_escape(value)}"
    query = parse_search((resource_type,), [("identifier", token), ("_count", "1")], strict=True)
    return (await reader.search(query)).matches


def _escape(value: str) -> str:
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value


def load(version: Version | None) -> JSONObject | None:
    """A version's content; None for none, or a deletion."""
    if version is None or version.body is None:
        return None
    return codec.load_object(version.body)


async def current_content(
    reader: Reader, resource_type: str, resource_id: str, *, deleted_ok: bool = False
) -> JSONObject | None:
    """The current content; with `deleted_ok`, a deleted resource's last content."""
    current = await reader.read(resource_type, resource_id)
    if current is None:
        return None
    if current.deleted and deleted_ok and current.version > 1:
        return load(await reader.vread(resource_type, resource_id, current.version - 1))
    return load(current)


async def save(
    unit: UnitOfWork, writes: WriteContext, resource: JSONObject, current: Version | None
) -> JSONObject:
    """Update `current` to `resource` through the write path; Gone if it was deleted."""
    if current is None:
        raise Gone(f"{resource.get('resourceType')}/{resource.get('id')} is gone")
    result = await crud.update_in(unit, writes, resource, current.id, current, NO_PRECONDITIONS)
    assert result.version.body is not None
    return codec.load_object(result.version.body)


async def create(unit: UnitOfWork, writes: WriteContext, resource: JSONObject) -> JSONObject:
    result = await crud.write_new(unit, writes, resource)
    assert result.version.body is not None
    return codec.load_object(result.version.body)


async def audit(
    unit: UnitOfWork,
    writes: WriteContext,
    subtype: str,
    at: datetime,
    about: list[str],
    *,
    who: str | None = None,
    display: str | None = None,
    delivery: str | None = None,
    outcome: str | None = None,
    action: str = "E",
    failed: bool = False,
    named: Iterable[JSONObject] = (),
) -> None:
    """Record the AuditEvent of a visit event in the unit (audit.py `audit_event`)."""
    event = audit_event(
        subtype,
        at,
        about,
        who=who,
        display=display,
        delivery=delivery,
        outcome=outcome,
        action=action,
        failed=failed,
        named=named,
    )
    await crud.write_new(unit, writes, event)


def about_visit(appointment: JSONObject, encounter: JSONObject | None = None) -> list[str]:
    """What an AuditEvent of the visit is about: the Appointment, its Encounter once it
    exists, and the patient."""
    about = [f"Appointment/{appointment.get('id')}"]
    if encounter is not None and encounter.get("id"):
        about.append(f"Encounter/{encounter['id']}")
    patient = patient_reference(appointment)
    if patient is not None:
        about.append(patient)
    return about


def about_encounter(encounter: JSONObject) -> list[str]:
    """The same, known from the Encounter: it, its Appointments and its subject."""
    about = [f"Encounter/{encounter.get('id')}"]
    about += [r for r in map(local_reference, encounter.get("appointment") or []) if r]
    subject = local_reference(encounter.get("subject"))
    if subject is not None:
        about.append(subject)
    return about


async def visit_encounter(reader: Reader, appointment_id: str) -> JSONObject | None:
    return load(await visit_encounter_version(reader, appointment_id))


async def visit_encounter_version(reader: Reader, appointment_id: str) -> Version | None:
    """The Encounter of an Appointment's visit: the virtual one that has not ended, else
    the latest virtual one; None if there is none."""
    criteria = [("appointment", f"Appointment/{appointment_id}")]
    found = [v for v in await find(reader, "Encounter", criteria, 50) if is_vr(load(v))]
    found.sort(key=lambda v: v.last_updated)
    for version in found:
        content = load(version) or {}
        if content.get("status") not in FINAL_ENCOUNTER:
            return version
    return found[-1] if found else None


def needs_room(appointment: JSONObject) -> bool:
    return is_virtual(appointment) and appointment.get("status") in ROOM_STATUSES


def room_id(appointment: JSONObject) -> str | None:
    """The provider's id of the Appointment's room (its sessionKey), if it has one."""
    service = virtual_service(appointment) if is_virtual(appointment) else None
    return service.session_key if service is not None else None


def max_participants(appointment: JSONObject) -> int | None:
    service = virtual_service(appointment)
    return service.max_participants if service is not None else None


async def assign_room(
    context: VisitContext,
    unit: UnitOfWork,
    appointment: JSONObject,
    current: Version | None,
    room: Room,
) -> JSONObject:
    """Write the room's id, a new meeting code and the join address into the
    Appointment (a server write: a client may not set them)."""
    code = await _unused_code(unit)
    service = virtual_service(appointment)
    assert service is not None
    updated = with_virtual_service(
        appointment,
        replace(
            service,
            address=join_url(context.settings, code),
            session_key=room.room_id,
            meeting_code=code,
        ),
    )
    writes = context.writes
    stored = await save(unit, writes.as_server(), updated, current)
    await audit(unit, writes, "room-provisioned", writes.clock(), about_visit(stored))
    return stored


async def _unused_code(reader: Reader) -> str:
    while True:
        code = codes.new_code()
        if not await find(reader, "Appointment", [("meeting-code", code)], 1):
            return code


def clean_display(text: str | None) -> str | None:
    """A participant's display name as recorded: whitespace collapsed; None when empty,
    over MAX_DISPLAY characters, or holding control characters or lone surrogates
    (not text: they cannot be stored as JSON)."""
    if text is None:
        return None
    name = " ".join(text.split())
    if not name or len(name) > MAX_DISPLAY:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        return None
    return name
