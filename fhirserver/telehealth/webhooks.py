"""Provider webhooks (README "Telehealth" / "Providers"): a verified event about a room
becomes a participant period opened or closed on the visit's Encounter (R4
encounter.html Encounter.participant.period), the visit finished, or a finished recording
linked as a DocumentReference or discarded (recordings.py), each with its AuditEvent;
a participant's network quality the provider reports is an Observation (call_quality.py). A
delivery is recorded once: its id is an entity of the AuditEvent it made (audit.py), and
a delivery without an id changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from fhirserver.resources.references import local_reference
from fhirserver.storage.base import Reader, UnitOfWork
from fhirserver.telehealth.call_quality import quality_observation
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.encounter_lifecycle import (
    end_visit,
    participant_joined,
    participant_left,
)
from fhirserver.telehealth.lifecycle import FINAL_ENCOUNTER
from fhirserver.telehealth.providers import (
    Recording,
    RecordingDeletion,
    RoomEvent,
    WebhookChallenges,
    WebhookRejected,
)
from fhirserver.telehealth.recordings import (
    recording_document,
    recording_identifier_system,
    recording_permitted,
)
from fhirserver.telehealth.records import (
    about_visit,
    audit,
    clean_display,
    create,
    find,
    find_identifier,
    load,
    save,
    visit_encounter_version,
)


def challenge_answer(
    context: VisitContext, headers: Mapping[str, str], body: bytes
) -> dict[str, str] | None:
    """The answer to a provider's endpoint challenge (Zoom's URL validation), verified
    like any delivery (WebhookRejected); None for an ordinary delivery or a provider
    without challenges. Records nothing."""
    provider = context.provider
    if isinstance(provider, WebhookChallenges):
        return provider.webhook_challenge(headers, body)
    return None


# How far an event's time may lie from now: providers retry deliveries for hours to a
# few days, and clocks differ by seconds.
EVENT_PAST = timedelta(days=7)
EVENT_AHEAD = timedelta(minutes=5)


async def record_webhook(context: VisitContext, headers: Mapping[str, str], body: bytes) -> int:
    """Verify a provider webhook (WebhookRejected, 401, records nothing) and record its
    events; how many were recorded. Events about rooms or visits the server does not
    know, or has ended, are verified and dropped."""
    events = context.provider.parse_webhook(headers, body)
    recorded = 0
    for event in events:
        if event.recording is not None:
            recorded += await _record_recording(context, event, event.recording)
            continue
        async with context.store.unit_of_work() as unit:
            recorded += await _record_event(context, unit, event)
    return recorded


def _delivery(event: RoomEvent) -> str | None:
    return f"{event.provider}:{event.event_id}" if event.event_id else None


async def _delivered(reader: Reader, delivery: str | None) -> bool:
    """Whether this delivery was recorded before (an AuditEvent names it)."""
    seen = [("entity-name:exact", delivery)] if delivery else []
    return bool(seen and await find(reader, "AuditEvent", seen, 1))


def _check_time(context: VisitContext, event: RoomEvent) -> None:
    now = context.writes.clock()
    if not now - EVENT_PAST <= event.at <= now + EVENT_AHEAD:
        # Verified, about a visit we know, but stamped far from now: refused, not made a
        # participant period (or a recording) from the year 9999 (or 1970).
        raise WebhookRejected(f"webhook event time {event.at.isoformat()} is implausible")


async def _record_event(context: VisitContext, unit: UnitOfWork, event: RoomEvent) -> int:
    delivery = _delivery(event)
    if await _delivered(unit, delivery):
        return 0
    found = await find(unit, "Appointment", [("session-key", event.room_id)], 1)
    appointment = load(found[0]) if found else None
    if appointment is None:
        return 0
    current = await visit_encounter_version(unit, str(appointment["id"]))
    encounter = load(current)
    if encounter is None or encounter.get("status") in FINAL_ENCOUNTER:
        return 0
    _check_time(context, event)
    who = local_reference({"reference": event.participant_identity})
    display = clean_display(event.participant_display) or (
        None if who else clean_display(event.participant_identity)
    )
    if event.kind == "room-ended":
        if encounter.get("status") != "in-progress":
            return 0
        updated, subtype = end_visit(encounter, event.at), "visit-ended"
        who = display = None
    elif who is None and not display:
        return 0
    elif event.kind == "participant-joined":
        updated = participant_joined(encounter, who, display, event.at)
        subtype = "participant-joined"
    else:
        updated = participant_left(encounter, who, display, event.at)
        subtype = "participant-left"
    if updated == encounter:
        return 0  # a delivery repeated, or an event the record already shows
    await save(unit, context.writes, updated, current)
    await audit(
        unit,
        context.writes,
        subtype,
        event.at,
        about_visit(appointment, encounter),
        who=who,
        display=display,
        delivery=delivery,
    )
    if event.network_quality is not None and subtype != "visit-ended":
        observation = quality_observation(
            event.network_quality, event.at, appointment, encounter, who, display
        )
        await create(unit, context.writes.as_server(), observation)
    return 1


async def _record_recording(context: VisitContext, event: RoomEvent, recording: Recording) -> int:
    """Link a finished recording to its visit, or discard it (recordings.py). The
    provider is called (to delete) before the unit of work opens: a deletion that fails
    records nothing, so the provider's retry of the delivery tries again."""
    store, writes = context.store, context.writes
    delivery = _delivery(event)
    identifier = (recording_identifier_system(event.provider), recording.recording_id)
    if await _recording_seen(store, delivery, identifier):
        return 0
    found = await find(store, "Appointment", [("session-key", event.room_id)], 1)
    appointment = load(found[0]) if found else None
    if appointment is None:
        return 0
    _check_time(context, event)
    now = writes.clock()
    instants = [now] if recording.started is None else [recording.started, now]
    permitted = await recording_permitted(store, appointment, instants)
    deleted = False
    provider = context.provider
    if not permitted and isinstance(provider, RecordingDeletion):
        deleted = await provider.delete_recording(recording)
    async with store.unit_of_work() as unit:
        if await _recording_seen(unit, delivery, identifier):
            return 0
        encounter = load(await visit_encounter_version(unit, str(appointment["id"])))
        about = about_visit(appointment, encounter)
        if permitted:
            document = recording_document(event.provider, recording, appointment, encounter, now)
            stored = await create(unit, writes.as_server(), document)
            about.append(f"DocumentReference/{stored['id']}")
            await audit(unit, writes, "recording-linked", now, about, delivery=delivery)
        else:
            outcome = "no telehealth-recording Consent of the patient was in force; " + (
                "the recording was deleted at the provider"
                if deleted
                else "the provider's copy could not be deleted from here: delete it there"
            )
            await audit(
                unit,
                writes,
                "recording-discarded",
                now,
                about,
                delivery=delivery,
                outcome=outcome,
            )
    return 1


async def _recording_seen(
    reader: Reader, delivery: str | None, identifier: tuple[str, str]
) -> bool:
    if await _delivered(reader, delivery):
        return True
    return bool(await find_identifier(reader, "DocumentReference", *identifier))
