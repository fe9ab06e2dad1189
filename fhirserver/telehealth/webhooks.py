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
from functools import partial

from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.storage.base import Reader, UnitOfWork
from fhirserver.storage.retry import run_unit
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
    recording_instants,
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
# The most recordings of one visit read when deciding what a deletion must spare.
LINKED_READ = 1000


async def record_webhook(context: VisitContext, headers: Mapping[str, str], body: bytes) -> int:
    """Verify a provider webhook (WebhookRejected, 401, records nothing) and record its
    events; how many were recorded. Events about rooms or visits the server does not
    know, or has ended, are verified and dropped."""
    events = context.provider.parse_webhook(headers, body)
    recorded = 0
    for event in events:
        if event.recording is None:
            recorded += await run_unit(context.store, partial(_record_event, context, event=event))
    ready = [event for event in events if event.recording is not None]
    if ready:
        # The files of one recording (Zoom's video, audio, chat, transcript) are decided
        # together: all linked, or all discarded.
        recorded += await _record_recordings(context, ready)
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


async def _record_recordings(context: VisitContext, events: list[RoomEvent]) -> int:
    """Link the finished recordings of one delivery to their visit, or discard them
    (recordings.py); how many were recorded. Deleting at the provider happens before the
    unit of work opens: a deletion that fails records nothing, so the provider's retry
    of the delivery tries again."""
    store = context.store
    fresh = [event for event in events if not await _recording_seen(store, event)]
    if not fresh:
        return 0
    found = await find(store, "Appointment", [("session-key", fresh[0].room_id)], 1)
    appointment = load(found[0]) if found else None
    if appointment is None:
        return 0
    for event in fresh:
        _check_time(context, event)
    linked = await _link(context, appointment, fresh)
    return linked if linked is not None else await _discard(context, appointment, fresh)


def _recordings(events: list[RoomEvent]) -> list[Recording]:
    return [event.recording for event in events if event.recording is not None]


async def _link(
    context: VisitContext, appointment: JSONObject, events: list[RoomEvent]
) -> int | None:
    """Link the recordings if a Consent allows it, deciding once before and again inside
    the unit that links them (a Consent withdrawn in between wins); None when it does not."""
    writes = context.writes
    now = writes.clock()
    instants = recording_instants(_recordings(events), now)
    if instants is None or not await recording_permitted(context.store, appointment, instants):
        return None

    async def work(unit: UnitOfWork) -> int | None:
        if not await recording_permitted(unit, appointment, instants):
            return None  # nothing was written: the unit commits empty
        linked = 0
        encounter = load(await visit_encounter_version(unit, str(appointment["id"])))
        for event in events:
            if event.recording is None or await _recording_seen(unit, event):
                continue
            document = recording_document(
                event.provider, event.recording, appointment, encounter, now
            )
            stored = await create(unit, writes.as_server(), document)
            about = [*about_visit(appointment, encounter), f"DocumentReference/{stored['id']}"]
            delivery = _delivery(event)
            await audit(unit, writes, "recording-linked", now, about, delivery=delivery, action="C")
            linked += 1
        return linked

    return await run_unit(context.store, work)


async def _discard(context: VisitContext, appointment: JSONObject, events: list[RoomEvent]) -> int:
    """Delete the recordings at the provider where it can, then record that they were
    discarded: a deleted one is not named (nothing of it is kept); one left at the provider
    is named by its id, a minor failure, so that someone deletes it there."""
    provider, writes = context.provider, context.writes
    deleted: dict[str, bool] = {}
    keep = await _linked(context.store, appointment, events[0].provider)
    for recording in _recordings(events):
        gone = False
        if isinstance(provider, RecordingDeletion):
            gone = await provider.delete_recording(recording, keep)
        deleted[recording.recording_id] = gone
    now = writes.clock()

    async def work(unit: UnitOfWork) -> int:
        discarded = 0
        encounter = load(await visit_encounter_version(unit, str(appointment["id"])))
        for event in events:
            if event.recording is None or await _recording_seen(unit, event):
                continue
            gone = deleted[event.recording.recording_id]
            identifier = {
                "system": recording_identifier_system(event.provider),
                "value": event.recording.recording_id,
            }
            outcome = "no telehealth-recording Consent of the patient covered it; " + (
                "the recording was deleted at the provider"
                if gone
                else "the recording could not be deleted from here: delete it at the provider"
            )
            await audit(
                unit,
                writes,
                "recording-discarded",
                now,
                about_visit(appointment, encounter),
                delivery=_delivery(event),
                outcome=outcome,
                action="D" if gone else "E",
                failed=not gone,
                named=() if gone else [identifier],
            )
            discarded += 1
        return discarded

    return await run_unit(context.store, work)


async def _linked(reader: Reader, appointment: JSONObject, provider: str) -> set[str]:
    """The provider's ids of the visit's recordings linked to the record."""
    related = [("related", f"Appointment/{appointment['id']}")]
    system = recording_identifier_system(provider)
    return {
        str(identifier.get("value"))
        for document in map(load, await find(reader, "DocumentReference", related, LINKED_READ))
        if document is not None
        for identifier in document.get("identifier") or []
        if isinstance(identifier, dict) and identifier.get("system") == system
    }


async def _recording_seen(reader: Reader, event: RoomEvent) -> bool:
    """Whether this delivery, or this recording in another delivery, was recorded."""
    if await _delivered(reader, _delivery(event)):
        return True
    if event.recording is None:
        return False
    system = recording_identifier_system(event.provider)
    return bool(
        await find_identifier(reader, "DocumentReference", system, event.recording.recording_id)
    )
