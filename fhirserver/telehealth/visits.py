"""What the server does for a virtual visit: the jobs the lifecycle records (provision,
dispose, close, no-show), `$start-virtual-visit`, `$end-virtual-visit`, join by code, and
provider webhooks. Plain async functions over the store and a `VideoProvider`: no HTTP.

The rule throughout (DESIGN.md "Side effects and external calls"): a provider is called
only when no unit of work is open, and every write re-reads what it changes inside its
unit, so two callers at once (two server processes, a retry and its original) end in one
room, one Encounter and one meeting code.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from fhirserver.errors import Gone, NotFound
from fhirserver.interactions import crud
from fhirserver.interactions.jobs import Handler, TryLater
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources import codec, meta
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Job, Reader, Store, UnitOfWork, Version
from fhirserver.telehealth import (
    appointment_lifecycle,
    codes,
    encounter_lifecycle,
    lifecycle,
    rules,
)
from fhirserver.telehealth.audit import audit_event
from fhirserver.telehealth.providers import (
    ParticipantToken,
    ProviderUnavailable,
    Room,
    RoomEvent,
    VideoProvider,
)
from fhirserver.telehealth.virtual_service import (
    consent_permits_visit,
    is_virtual,
    patient_reference,
    virtual_service,
    with_virtual_service,
)

logger = logging.getLogger("fhirserver.telehealth")
# Appointment statuses in which a meeting code admits (inside the time window).
_JOINABLE = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
_ENDED_ENCOUNTER = frozenset({"finished", "cancelled", "entered-in-error"})


@dataclass(frozen=True)
class VisitSettings:
    no_show_grace: timedelta = lifecycle.DEFAULT_NO_SHOW_GRACE
    # The join page admits from this long before the Appointment's start.
    join_early: timedelta = timedelta(minutes=15)
    token_ttl: timedelta = timedelta(minutes=10)
    require_consent: bool = False
    # Where the join page lives: the Appointment's address is `{join_base}/{code}`.
    join_base: str = "http://127.0.0.1:8080/join"


@dataclass(frozen=True)
class StartedVisit:
    encounter: JSONObject
    host: ParticipantToken
    patient_url: str
    meeting_code: str


@dataclass(frozen=True)
class Joined:
    """A join by code: `waiting` until the visit starts, then the guest's token."""

    appointment_id: str
    waiting: bool
    start: str | None = None
    token: ParticipantToken | None = None


class NotOpen(NotFound):
    """The one answer for a code that is unknown, malformed, too early or expired."""

    def __init__(self) -> None:
        super().__init__("No visit is open for this meeting code")


class Visits:
    def __init__(
        self,
        store: Store,
        provider: VideoProvider,
        writes: WriteContext,
        settings: VisitSettings | None = None,
    ) -> None:
        """`writes`: the app's write rules and its clock, which the visit's own
        decisions (join windows, no-shows, token lifetimes) read too."""
        self.store = store
        self.provider = provider
        self.writes = writes
        self.clock = writes.clock
        self.settings = settings or VisitSettings()

    def handlers(self) -> Mapping[str, Handler]:
        return {
            rules.PROVISION: self.provision,
            rules.DISPOSE: self.dispose,
            rules.CLOSE: self.close,
            rules.NO_SHOW: self.no_show,
        }

    # -- jobs -----------------------------------------------------------------------------

    async def provision(self, job: Job) -> None:
        """Create the room of a virtual Appointment that needs one, then write its address,
        sessionKey and meeting code. Nothing to do once it has them, or no longer needs one."""
        appointment = await _content(self.store, "Appointment", job.key)
        if appointment is None or not _needs_room(appointment):
            return
        if _room_id(appointment) is not None:
            return
        room = await self._call(self.provider.create_room(job.key, _max(appointment)))
        async with self.store.unit_of_work() as unit:
            current = await unit.read("Appointment", job.key)
            fresh = _load(current)
            if fresh is not None and _needs_room(fresh) and _room_id(fresh) is None:
                await self._assign_room(unit, fresh, current, room)
                return
        # Cancelled (or given a room by $start-virtual-visit) while the room was made.
        if fresh is None or _room_id(fresh) != room.room_id:
            await self._call(self.provider.close_room(room))

    async def dispose(self, job: Job) -> None:
        """Close the room of an Appointment that will not take place (or was deleted)."""
        appointment = await _content(self.store, "Appointment", job.key, deleted_ok=True)
        await self._close_room_of(appointment)

    async def close(self, job: Job) -> None:
        """Close the room of a virtual Encounter that ended."""
        encounter = await _content(self.store, "Encounter", job.key, deleted_ok=True)
        for reference in (encounter or {}).get("appointment") or []:
            target = local_reference(reference)
            if target is not None and target.startswith("Appointment/"):
                appointment_id = target.split("/")[1]
                appointment = await _content(
                    self.store, "Appointment", appointment_id, deleted_ok=True
                )
                await self._close_room_of(appointment, encounter)

    async def no_show(self, job: Job) -> None:
        """Mark a still-booked virtual Appointment `noshow` once start + grace has passed;
        its room is then disposed by the job that write records."""
        now = self.clock()
        async with self.store.unit_of_work() as unit:
            current = await unit.read("Appointment", job.key)
            appointment = _load(current)
            if appointment is None or not appointment_lifecycle.no_show_due(
                appointment, now, self.settings.no_show_grace
            ):
                return
            await _save(unit, self.writes, {**appointment, "status": "noshow"}, current)
            await _audit(unit, self.writes, "no-show", now, _about(appointment))

    async def _close_room_of(
        self, appointment: JSONObject | None, encounter: JSONObject | None = None
    ) -> None:
        room_id = _room_id(appointment) if appointment is not None else None
        if room_id is None or appointment is None:
            return
        room = Room(self.provider.name, room_id, room_id, "")
        await self._call(self.provider.close_room(room))
        async with self.store.unit_of_work() as unit:
            await _audit(
                unit, self.writes, "room-closed", self.clock(), _about(appointment, encounter)
            )

    async def _call(self, call: Any) -> Any:
        """A provider call from a job: an outage is TryLater (retried with backoff)."""
        try:
            return await call
        except ProviderUnavailable as exc:
            raise TryLater(str(exc)) from None

    # -- $start-virtual-visit / $end-virtual-visit ----------------------------------------

    async def start(
        self, appointment_id: str, practitioner: str | None = None, display: str | None = None
    ) -> StartedVisit:
        """Start (or rejoin) the visit: working join details, or a 422 / 502 / 503 with
        nothing written. The provider is called before the unit of work: a failure there
        leaves the store untouched, and a room made by a call whose write then lost a race
        is the same room (create_room is idempotent on the Appointment id)."""
        appointment = _load(await crud.read(self.store, "Appointment", appointment_id)) or {}
        encounter_lifecycle.is_startable(
            appointment, await _visit_encounter(self.store, appointment_id)
        )
        if self.settings.require_consent:
            await self._check_consent(appointment)
        room_id = _room_id(appointment)
        if room_id is not None:
            room = await self.provider.room(room_id)
        else:
            room = await self.provider.create_room(appointment_id, _max(appointment))
        try:
            appointment, visit = await self._start_in_unit(
                appointment_id, room, practitioner, display
            )
        except Exception:
            if room_id is None:
                await self._drop_unused_room(appointment_id, room)
            raise
        stored_room = _room_id(appointment)
        if stored_room is not None and stored_room != room.room_id:
            room = await self.provider.room(stored_room)
        service = virtual_service(appointment)
        code = service.meeting_code if service is not None else None
        assert code is not None  # assigned above, in this unit or before
        host = self.provider.participant_token(
            room,
            practitioner or f"host-{uuid.uuid4().hex[:12]}",
            display or "Clinician",
            "host",
            self.settings.token_ttl,
        )
        return StartedVisit(visit, host, self.join_url(code), code)

    async def _start_in_unit(
        self, appointment_id: str, room: Room, practitioner: str | None, display: str | None
    ) -> tuple[JSONObject, JSONObject]:
        now = self.clock()
        async with self.store.unit_of_work() as unit:
            # Read again: the Appointment may have changed while the provider answered.
            current: Version | None = await crud.read(unit, "Appointment", appointment_id)
            appointment = _load(current) or {}
            encounter_version = await _visit_encounter_version(unit, appointment_id)
            encounter = _load(encounter_version)
            encounter_lifecycle.is_startable(appointment, encounter)
            if _room_id(appointment) is None:
                appointment = await self._assign_room(unit, appointment, current, room)
                current = await unit.read("Appointment", appointment_id)
            started, visit = encounter_lifecycle.start_visit(
                appointment,
                encounter,
                now,
                practitioner=practitioner,
                practitioner_display=display,
            )
            if started != appointment:
                await _save(unit, self.writes, started, current)
            if encounter is None:
                visit = await _create(unit, self.writes, visit)
            elif visit != encounter:
                visit = await _save(unit, self.writes, visit, encounter_version)
            if encounter is None or encounter.get("status") != "in-progress":
                about = _about(appointment, visit)
                await _audit(
                    unit,
                    self.writes,
                    "visit-started",
                    now,
                    about,
                    who=practitioner,
                    display=display,
                )
        return appointment, visit

    async def _drop_unused_room(self, appointment_id: str, room: Room) -> None:
        """Close a room made for a start that failed, unless the Appointment holds it
        (another start got it in): it would stay open at the provider with nothing to
        close it. Best effort: the start's own error is what the caller gets."""
        appointment = await _content(self.store, "Appointment", appointment_id)
        if appointment is not None and _room_id(appointment) == room.room_id:
            return
        try:
            await self.provider.close_room(room)
        except Exception:
            logger.warning("room of Appointment/%s left open at the provider", appointment_id)

    async def end(
        self, resource_type: str, resource_id: str, reason: str | None = None
    ) -> JSONObject:
        """Finish the visit's Encounter (of an Encounter, or of an Appointment's visit);
        `reason`, the operation's input as text, goes into the AuditEvent."""
        now = self.clock()
        async with self.store.unit_of_work() as unit:
            current: Version | None
            if resource_type == "Appointment":
                await crud.read(unit, "Appointment", resource_id)
                current = await _visit_encounter_version(unit, resource_id)
                if current is None:
                    raise lifecycle.business_rule(
                        f"The visit of Appointment/{resource_id} has not started: "
                        "there is no Encounter to end",
                        "Appointment.status",
                    )
            else:
                current = await crud.read(unit, "Encounter", resource_id)
            encounter = _load(current) or {}
            ended = encounter_lifecycle.end_visit(encounter, now)
            if ended == encounter:
                return encounter
            stored = await _save(unit, self.writes, ended, current)
            about = _about_encounter(stored)
            await _audit(unit, self.writes, "visit-ended", now, about, outcome=reason)
            return stored

    async def _check_consent(self, appointment: JSONObject) -> None:
        patient = patient_reference(appointment)
        if patient is not None:
            criteria = [("patient", patient), ("status", "active")]
            consents = await _find(self.store, "Consent", criteria, 100)
            now = self.clock()
            for version in consents:
                consent = _load(version)
                if consent is not None and consent_permits_visit(consent, patient, now):
                    return
        raise lifecycle.business_rule(
            f"{patient or 'The patient'} has no active telehealth Consent "
            "(scope treatment, category telehealth) covering this visit",
            "Appointment.participant",
        )

    # -- join by code ---------------------------------------------------------------------

    def join_url(self, code: str) -> str:
        return f"{self.settings.join_base}/{code}"

    async def join(self, typed_code: str, display: str) -> Joined:
        """A patient (or their guest) enters by meeting code: waiting room before the visit
        starts (the Appointment becomes `arrived`), a guest token once it has. Every code
        that does not admit now gets `NotOpen`, whatever the reason."""
        code = codes.normalize(typed_code)
        if code is None:
            raise NotOpen()
        # The room first, outside the unit (for 100ms a network call): a provider outage
        # must not leave a join recorded for someone who got no token.
        now = self.clock()
        room = await self._room_to_join(code, now)
        async with self.store.unit_of_work() as unit:
            found = await _find(unit, "Appointment", [("meeting-code", code)], 1)
            current = found[0] if found else None
            appointment = _load(current)
            if appointment is None or not self._admits(appointment, now):
                raise NotOpen()
            encounter_version = await _visit_encounter_version(unit, str(appointment["id"]))
            encounter = _load(encounter_version)
            if encounter is not None and encounter.get("status") in _ENDED_ENCOUNTER:
                raise NotOpen()
            patient = patient_reference(appointment)
            arrived = appointment_lifecycle.patient_arrived(appointment)
            if arrived != appointment:
                await _save(unit, self.writes, arrived, current)
                about = _about(appointment)
                await _audit(
                    unit, self.writes, "patient-waiting", now, about, who=patient, display=display
                )
            # Started, with the room in hand (else the next poll admits).
            started = (
                encounter is not None
                and encounter.get("status") == "in-progress"
                and room is not None
                and room.room_id == _room_id(appointment)
            )
            if encounter is not None and started:
                joined = encounter_lifecycle.participant_joined(encounter, patient, display, now)
                if joined != encounter:
                    await _save(unit, self.writes, joined, encounter_version)
                    about = _about(appointment, encounter)
                    await _audit(
                        unit,
                        self.writes,
                        "participant-joined",
                        now,
                        about,
                        who=patient,
                        display=display,
                    )
        if not started or room is None:
            start = appointment.get("start")
            return Joined(str(appointment["id"]), True, start if isinstance(start, str) else None)
        identity = patient or f"guest-{uuid.uuid4().hex[:12]}"
        token = self.provider.participant_token(
            room, identity, display, "guest", self.settings.token_ttl
        )
        return Joined(str(appointment["id"]), False, token=token)

    async def _room_to_join(self, code: str, now: datetime) -> Room | None:
        """The room of the visit this code opens, if it admits now and has started."""
        found = await _find(self.store, "Appointment", [("meeting-code", code)], 1)
        seen = _load(found[0]) if found else None
        if seen is None or not self._admits(seen, now):
            return None
        encounter = await _visit_encounter(self.store, str(seen["id"]))
        room_id = _room_id(seen)
        if encounter is None or encounter.get("status") != "in-progress" or room_id is None:
            return None
        return await self.provider.room(room_id)

    def _admits(self, appointment: JSONObject, now: datetime) -> bool:
        if not is_virtual(appointment) or appointment.get("status") not in _JOINABLE:
            return False
        if _room_id(appointment) is None:
            return False
        start = lifecycle.instant(appointment.get("start"))
        return start is None or now >= start - self.settings.join_early

    # -- webhooks -------------------------------------------------------------------------

    async def webhook(self, headers: Mapping[str, str], body: bytes) -> int:
        """Verify a provider webhook (WebhookRejected, 401, records nothing) and record its
        events; how many were recorded. Events about rooms or visits the server does not
        know, or has ended, are verified and dropped."""
        events = self.provider.parse_webhook(headers, body)
        recorded = 0
        for event in events:
            async with self.store.unit_of_work() as unit:
                recorded += await self._record_event(unit, event)
        return recorded

    async def _record_event(self, unit: UnitOfWork, event: RoomEvent) -> int:
        delivery = f"{event.provider}:{event.event_id}" if event.event_id else None
        seen = [("entity-name:exact", delivery)] if delivery else []
        if seen and await _find(unit, "AuditEvent", seen, 1):
            return 0
        found = await _find(unit, "Appointment", [("session-key", event.room_id)], 1)
        appointment = _load(found[0]) if found else None
        if appointment is None:
            return 0
        current = await _visit_encounter_version(unit, str(appointment["id"]))
        encounter = _load(current)
        if encounter is None or encounter.get("status") in _ENDED_ENCOUNTER:
            return 0
        who = local_reference({"reference": event.participant_identity})
        display = clean_display(event.participant_display) or (
            None if who else clean_display(event.participant_identity)
        )
        if event.kind == "room-ended":
            if encounter.get("status") != "in-progress":
                return 0
            updated, subtype = encounter_lifecycle.end_visit(encounter, event.at), "visit-ended"
            who = display = None
        elif who is None and not display:
            return 0
        elif event.kind == "participant-joined":
            updated = encounter_lifecycle.participant_joined(encounter, who, display, event.at)
            subtype = "participant-joined"
        else:
            updated = encounter_lifecycle.participant_left(encounter, who, display, event.at)
            subtype = "participant-left"
        if updated == encounter:
            return 0  # a delivery repeated, or an event the record already shows
        await _save(unit, self.writes, updated, current)
        await _audit(
            unit,
            self.writes,
            subtype,
            event.at,
            _about(appointment, encounter),
            who=who,
            display=display,
            delivery=delivery,
        )
        return 1

    # -- shared ---------------------------------------------------------------------------

    async def _assign_room(
        self, unit: UnitOfWork, appointment: JSONObject, current: Version | None, room: Room
    ) -> JSONObject:
        """Write the room's id, a new meeting code and the join address into the
        Appointment (a server write: a client may not set them)."""
        code = await _unused_code(unit)
        service = virtual_service(appointment)
        assert service is not None
        updated = with_virtual_service(
            appointment,
            replace(
                service, address=self.join_url(code), session_key=room.room_id, meeting_code=code
            ),
        )
        stored = await _save(unit, self.writes.as_server(), updated, current)
        await _audit(unit, self.writes, "room-provisioned", self.clock(), _about(stored))
        return stored


async def _find(
    reader: Reader, resource_type: str, criteria: list[tuple[str, str]], limit: int
) -> list[Version]:
    """Search with exact values: `\\ , | $` in them are escaped (R4 search.html#escaping),
    so a value from outside (a webhook's room name) cannot add search syntax."""
    escaped = [(name, _escape(value)) for name, value in criteria]
    query = parse_search((resource_type,), [*escaped, ("_count", str(limit))], strict=True)
    return (await reader.search(query)).matches


def _escape(value: str) -> str:
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value


#: The longest display name the server records for a participant.
MAX_DISPLAY = 80


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


async def _unused_code(reader: Reader) -> str:
    while True:
        code = codes.new_code()
        if not await _find(reader, "Appointment", [("meeting-code", code)], 1):
            return code


def _load(version: Version | None) -> JSONObject | None:
    if version is None or version.body is None:
        return None
    return codec.load_object(version.body)


async def _content(
    store: Reader, resource_type: str, resource_id: str, *, deleted_ok: bool = False
) -> JSONObject | None:
    """The current content; with `deleted_ok`, a deleted resource's last content."""
    current = await store.read(resource_type, resource_id)
    if current is None:
        return None
    if current.deleted and deleted_ok and current.version > 1:
        return _load(await store.vread(resource_type, resource_id, current.version - 1))
    return _load(current)


async def _save(
    unit: UnitOfWork, writes: WriteContext, resource: JSONObject, current: Version | None
) -> JSONObject:
    if current is None:
        raise Gone(f"{resource.get('resourceType')}/{resource.get('id')} is gone")
    result = await crud.update_in(
        unit, writes, resource, current.id, current, crud.NO_PRECONDITIONS
    )
    assert result.version.body is not None
    return codec.load_object(result.version.body)


async def _create(unit: UnitOfWork, writes: WriteContext, resource: JSONObject) -> JSONObject:
    result = await crud.write_new(unit, writes, resource, meta.new_id())
    assert result.version.body is not None
    return codec.load_object(result.version.body)


async def _audit(
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
) -> None:
    event = audit_event(
        subtype, at, about, who=who, display=display, delivery=delivery, outcome=outcome
    )
    await crud.write_new(unit, writes, event, meta.new_id())


def _about(appointment: JSONObject, encounter: JSONObject | None = None) -> list[str]:
    about = [f"Appointment/{appointment.get('id')}"]
    if encounter is not None and encounter.get("id"):
        about.append(f"Encounter/{encounter['id']}")
    patient = patient_reference(appointment)
    if patient is not None:
        about.append(patient)
    return about


def _about_encounter(encounter: JSONObject) -> list[str]:
    about = [f"Encounter/{encounter.get('id')}"]
    about += [r for r in map(local_reference, encounter.get("appointment") or []) if r]
    subject = local_reference(encounter.get("subject"))
    if subject is not None:
        about.append(subject)
    return about


async def _visit_encounter(reader: Reader, appointment_id: str) -> JSONObject | None:
    return _load(await _visit_encounter_version(reader, appointment_id))


async def _visit_encounter_version(reader: Reader, appointment_id: str) -> Version | None:
    """The Encounter of an Appointment's visit: the virtual one that has not ended, else
    the latest virtual one; None if there is none."""
    criteria = [("appointment", f"Appointment/{appointment_id}")]
    found = [
        v
        for v in await _find(reader, "Encounter", criteria, 50)
        if encounter_lifecycle.is_vr(_load(v))
    ]
    found.sort(key=lambda v: v.last_updated)
    for version in found:
        content = _load(version) or {}
        if content.get("status") not in _ENDED_ENCOUNTER:
            return version
    return found[-1] if found else None


def _needs_room(appointment: JSONObject) -> bool:
    return is_virtual(appointment) and appointment.get("status") in lifecycle.ROOM_STATUSES


def _room_id(appointment: JSONObject) -> str | None:
    service = virtual_service(appointment) if is_virtual(appointment) else None
    return service.session_key if service is not None else None


def _max(appointment: JSONObject) -> int | None:
    service = virtual_service(appointment)
    return service.max_participants if service is not None else None
