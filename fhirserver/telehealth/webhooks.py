"""Provider webhooks (README "Telehealth" / "Providers"): a verified event about a room
becomes a participant period opened or closed on the visit's Encounter (R4
encounter.html Encounter.participant.period), or the visit finished, each with its
AuditEvent. A delivery is recorded once: its id is an entity of the AuditEvent it made
(audit.py), and a delivery without an id changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from fhirserver.resources.references import local_reference
from fhirserver.storage.base import UnitOfWork
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.encounter_lifecycle import (
    end_visit,
    participant_joined,
    participant_left,
)
from fhirserver.telehealth.lifecycle import FINAL_ENCOUNTER
from fhirserver.telehealth.providers import RoomEvent, WebhookChallenges, WebhookRejected
from fhirserver.telehealth.records import (
    about_visit,
    audit,
    clean_display,
    find,
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
        async with context.store.unit_of_work() as unit:
            recorded += await _record_event(context, unit, event)
    return recorded


async def _record_event(context: VisitContext, unit: UnitOfWork, event: RoomEvent) -> int:
    delivery = f"{event.provider}:{event.event_id}" if event.event_id else None
    seen = [("entity-name:exact", delivery)] if delivery else []
    if seen and await find(unit, "AuditEvent", seen, 1):
        return 0
    found = await find(unit, "Appointment", [("session-key", event.room_id)], 1)
    appointment = load(found[0]) if found else None
    if appointment is None:
        return 0
    current = await visit_encounter_version(unit, str(appointment["id"]))
    encounter = load(current)
    if encounter is None or encounter.get("status") in FINAL_ENCOUNTER:
        return 0
    now = context.writes.clock()
    if not now - EVENT_PAST <= event.at <= now + EVENT_AHEAD:
        # Verified, about a visit in progress, but stamped far from now: refused, not
        # made a participant period from the year 9999 (or 1970).
        raise WebhookRejected(f"webhook event time {event.at.isoformat()} is implausible")
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
    return 1
