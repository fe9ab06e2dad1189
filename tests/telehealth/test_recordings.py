"""Recordings of virtual visits (issue 19 point 6; R4 consent.html, documentreference.html,
auditevent.html; README "Recordings"): nothing is recorded without the patient's
telehealth-recording Consent. With it, the host's token may start Daily's cloud recording
and the finished recording becomes a DocumentReference on the visit's Encounter with an
AuditEvent; without it (never given, withdrawn, or its period over) the host's token
cannot record, a recording that arrives anyway is deleted at the provider and linked to
nothing, and only an AuditEvent says it existed. Daily on a fake REST API
(tests/telehealth/providers/test_daily.py)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.storage.base import Store, UnitOfWork
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.providers import DailyProvider, Recording
from fhirserver.telehealth.recordings import recording_instants
from fhirserver.telehealth.virtual_service import consent_permits_recording
from fhirserver.telehealth.webhooks import record_webhook
from tests.telehealth import daily_app, helpers
from tests.telehealth.daily_app import deliver, started_visit
from tests.telehealth.helpers import FHIR, events, read, search
from tests.telehealth.providers import test_daily, test_zoom
from tests.telehealth.providers.helpers import claims

# The app on Daily: these fixtures replace conftest.py's LiveKit ones in this module.
fake_daily = daily_app.fake_daily
provider = daily_app.provider
telehealth_settings = daily_app.telehealth_settings
RECORDING_ID = "cadf8094-62d8-4405-a56e-7640a1ec22cb"


def instant(seconds_from_now: int) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def consent(patient: str = "Patient/p1", **changes: Any) -> dict[str, Any]:
    """The patient's recording Consent, given an hour ago (before the recording began)."""
    return helpers.consent(
        patient, "telehealth-recording", **{"dateTime": instant(-3600)} | changes
    )


def visit_consent() -> dict[str, Any]:
    return helpers.consent()


async def give(http: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    created = await http.post(f"{FHIR}/Consent", json=resource)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def recording_ready(room: str, event_id: str = "rec-ready-1") -> bytes:
    return test_daily.hook(
        "recording.ready-to-download",
        event_id,
        **test_daily.RECORDING | {"room_name": room, "start_ts": int(time.time()) - 1800},
    )


def may_record(host_token: str) -> bool:
    grant = claims(host_token, test_daily.API_KEY)
    return grant.get("er") == "cloud" and grant.get("sr") is True


async def recordings(http: httpx.AsyncClient, encounter_id: str) -> list[dict[str, Any]]:
    return await search(http, f"DocumentReference?encounter=Encounter/{encounter_id}")


async def assert_discarded(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    """A visit whose recording, begun 30 minutes ago, arrives now: linked to nothing and
    deleted at Daily."""
    room, _ = await started_visit(http, app)
    fake_daily.recordings.add(RECORDING_ID)
    assert (await deliver(http, recording_ready(room))).json() == {"recorded": 1}
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set()


async def test_with_consent_the_host_records_and_the_recording_is_linked_once(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    await give(http, consent())
    room, started = await started_visit(http, app)
    assert may_record(started["hostToken"])
    encounter = started["encounter"]
    answer = await deliver(http, recording_ready(room))
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}, answer.text
    [document] = await recordings(http, encounter["id"])
    assert document["subject"] == {"reference": "Patient/p1"}
    assert document["status"] == "current" and document["docStatus"] == "final"
    assert document["type"]["coding"][0]["code"] == "visit-recording"
    attachment = document["content"][0]["attachment"]
    assert attachment["url"] == f"{test_daily.BASE}/recordings/{RECORDING_ID}"
    assert attachment["contentType"] == "video/mp4"
    period = document["context"]["period"]
    assert period["start"] < period["end"]
    linked = await search(http, f"AuditEvent?entity=DocumentReference/{document['id']}")
    assert [e["subtype"][0]["code"] for e in linked] == ["recording-linked"]
    # The same delivery again, and the same recording in another delivery: linked once.
    assert (await deliver(http, recording_ready(room))).json() == {"recorded": 0}
    assert (await deliver(http, recording_ready(room, "rec-ready-2"))).json() == {"recorded": 0}
    assert len(await recordings(http, encounter["id"])) == 1
    assert not [c for c in fake_daily.calls if c[1].startswith("/recordings")], "nothing deleted"


@pytest.mark.parametrize(
    "given",
    [
        pytest.param([], id="no consent"),
        pytest.param([visit_consent()], id="only the visit's consent"),
        pytest.param([consent(status="inactive")], id="withdrawn"),
        pytest.param(
            [consent(provision={"type": "permit", "period": {"end": "2020-01-01T00:00:00Z"}})],
            id="period over",
        ),
        pytest.param([consent("Patient/someone-else")], id="another patient's"),
    ],
)
async def test_without_consent_nothing_is_recorded(
    http: httpx.AsyncClient,
    app: Starlette,
    fake_daily: test_daily.FakeDaily,
    given: list[dict[str, Any]],
) -> None:
    for resource in given:
        await give(http, resource)
    room, started = await started_visit(http, app)
    assert not may_record(started["hostToken"]), "the host's token may start a recording"
    encounter = started["encounter"]
    fake_daily.recordings.add(RECORDING_ID)  # made anyway (the domain's own settings, say)
    answer = await deliver(http, recording_ready(room))
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}, answer.text
    assert await recordings(http, encounter["id"]) == []
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set(), "the recording was not deleted at the provider"
    assert (await events(http, f"Encounter/{encounter['id']}"))[-1] == "recording-discarded"
    [discarded] = await search(http, "AuditEvent?subtype=recording-discarded")
    assert "deleted at the provider" in discarded["outcomeDesc"]
    assert RECORDING_ID not in str(discarded)


async def test_a_consent_withdrawn_after_the_visit_started_wins(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    given = await give(http, consent())
    room, started = await started_visit(http, app)
    assert may_record(started["hostToken"])
    withdrawn = given | {"status": "inactive"}
    assert (await http.put(f"{FHIR}/Consent/{given['id']}", json=withdrawn)).status_code == 200
    fake_daily.recordings.add(RECORDING_ID)
    assert (await deliver(http, recording_ready(room))).json() == {"recorded": 1}
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set()


@pytest.mark.parametrize(
    ("starts", "ends"),
    [
        pytest.param(-7200, -600, id="ended after the recording began"),
        pytest.param(-600, 7200, id="began after the recording began"),
    ],
)
async def test_a_consent_must_cover_the_recording_from_its_start_to_its_arrival(
    http: httpx.AsyncClient,
    app: Starlette,
    fake_daily: test_daily.FakeDaily,
    starts: int,
    ends: int,
) -> None:
    """The recording began 30 minutes ago and arrives now."""
    period = {"start": instant(starts), "end": instant(ends)}
    await give(http, consent(provision={"type": "permit", "period": period}))
    await assert_discarded(http, app, fake_daily)


async def test_a_deletion_that_fails_records_nothing_and_the_retry_deletes(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    room, started = await started_visit(http, app)
    encounter = started["encounter"]
    audit = await events(http, f"Encounter/{encounter['id']}")
    fake_daily.recordings.add(RECORDING_ID)
    fake_daily.fail.append(test_daily.error(503, "server-error", "busy"))
    failed = await deliver(http, recording_ready(room))
    assert failed.status_code == 503 and failed.json()["resourceType"] == "OperationOutcome"
    assert await events(http, f"Encounter/{encounter['id']}") == audit
    assert fake_daily.recordings == {RECORDING_ID}
    assert (await deliver(http, recording_ready(room))).json() == {"recorded": 1}
    assert fake_daily.recordings == set()


async def test_a_recording_of_an_unknown_room_is_dropped(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    await give(http, consent())
    assert (await deliver(http, recording_ready("visit-unknown"))).json() == {"recorded": 0}
    assert await search(http, "DocumentReference") == []


async def test_the_stored_document_names_no_credential(
    http: httpx.AsyncClient, app: Starlette, provider: DailyProvider
) -> None:
    await give(http, consent())
    room, started = await started_visit(http, app)
    await deliver(http, recording_ready(room))
    [document] = await recordings(http, started["encounter"]["id"])
    stored = await read(http, "DocumentReference", document["id"])
    assert test_daily.API_KEY not in str(stored) and test_daily.HOOK_HMAC not in str(stored)


@pytest.mark.parametrize("duration", [1e300, -5, "1200", 10 * 24 * 3600])
async def test_an_implausible_duration_is_left_out_not_a_500(
    http: httpx.AsyncClient, app: Starlette, duration: object
) -> None:
    await give(http, consent())
    room, started = await started_visit(http, app)
    body = test_daily.hook(
        "recording.ready-to-download",
        "rec-ready-1",
        **test_daily.RECORDING
        | {"room_name": room, "start_ts": int(time.time()) - 1800, "duration": duration},
    )
    answer = await deliver(http, body)
    assert answer.status_code == 200 and answer.json() == {"recorded": 1}, answer.text
    [document] = await recordings(http, started["encounter"]["id"])
    assert "period" not in document["context"]


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(-600, id="dated after the recording began"),
        pytest.param(None, id="undated, stored after the recording began"),
    ],
)
async def test_a_consent_given_after_the_recording_began_does_not_cover_it(
    http: httpx.AsyncClient,
    app: Starlette,
    fake_daily: test_daily.FakeDaily,
    given: int | None,
) -> None:
    """The recording began 30 minutes ago. A Consent counts from Consent.dateTime (when it
    was given), or, undated, from when the server stored it: a patient who agrees
    afterwards did not agree to what was recorded before."""
    resource = consent()
    del resource["dateTime"]
    if given is not None:
        resource["dateTime"] = instant(given)
    await give(http, resource)
    await assert_discarded(http, app, fake_daily)


async def test_a_nested_deny_refuses_the_recording(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    """R4 consent.html Consent.provision.provision: a nested rule is an exception to the
    root one. Whatever it denies (an actor, a purpose, an action), the server cannot tell
    that the recording is outside it, so it does not record."""
    nested = {"type": "deny", "purpose": [{"code": "HRESCH"}]}
    await give(http, consent(provision={"type": "permit", "provision": [{"provision": [nested]}]}))
    room, started = await started_visit(http, app)
    assert not may_record(started["hostToken"])
    fake_daily.recordings.add(RECORDING_ID)
    assert (await deliver(http, recording_ready(room))).json() == {"recorded": 1}
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set()


class BeforeEachUnit:
    """The app's store, with `before` run as each unit of work is about to open: what a
    concurrent request may do between the webhook's decision and its unit."""

    def __init__(self, store: Store, before: Callable[[], Awaitable[None]]) -> None:
        self._store, self._before = store, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        await self._before()
        async with self._store.unit_of_work() as unit:
            yield unit


async def test_a_consent_withdrawn_while_the_recording_is_linked_wins(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    """The Consent is decided again inside the unit that links the recording: withdrawn
    between the first look and the write, the recording is discarded, not linked."""
    given = await give(http, consent())
    room, _ = await started_visit(http, app)
    fake_daily.recordings.add(RECORDING_ID)

    async def withdraw() -> None:
        if given["status"] == "active":
            given["status"] = "inactive"
            answer = await http.put(f"{FHIR}/Consent/{given['id']}", json=given)
            assert answer.status_code == 200, answer.text

    context: VisitContext = app.state.visit_context
    racing = dataclasses.replace(context, store=BeforeEachUnit(context.store, withdraw))
    body = recording_ready(room)
    assert await record_webhook(racing, test_daily.signed(body), body) == 1
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set(), "the recording was not deleted at the provider"
    [discarded] = await search(http, "AuditEvent?subtype=recording-discarded")
    assert discarded["outcome"] == "0"


class CannotDelete:
    """The app's provider, configured without the credentials that delete recordings."""

    def __init__(self, provider: DailyProvider) -> None:
        self._provider = provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def delete_recording(self, recording: Recording, keep: Collection[str] = ()) -> bool:
        return False


async def test_the_audit_events_say_what_happened_to_the_recording(
    http: httpx.AsyncClient,
    app: Starlette,
    provider: DailyProvider,
    fake_daily: test_daily.FakeDaily,
) -> None:
    """R4 AuditEvent.action and .outcome: linking creates a record (C, success); a
    recording deleted at the provider is a delete (D, success); one left there because
    it could not be deleted is a minor failure (4) that names the recording, so someone
    can delete it by hand."""
    given = await give(http, consent())
    room, _ = await started_visit(http, app)
    await deliver(http, recording_ready(room))
    [linked] = await search(http, "AuditEvent?subtype=recording-linked")
    assert (linked["action"], linked["outcome"]) == ("C", "0")
    withdrawn = given | {"status": "inactive"}
    assert (await http.put(f"{FHIR}/Consent/{given['id']}", json=withdrawn)).status_code == 200

    other = "0b9d0d4f-0c7a-4a39-a6a4-63c0a7e1f0aa"
    body = test_daily.hook(
        "recording.ready-to-download",
        "rec-ready-9",
        **test_daily.RECORDING
        | {"room_name": room, "start_ts": int(time.time()) - 600, "recording_id": other},
    )
    context: VisitContext = app.state.visit_context
    kept = dataclasses.replace(context, provider=CannotDelete(provider))
    assert await record_webhook(kept, test_daily.signed(body), body) == 1
    [left] = await search(http, "AuditEvent?subtype=recording-discarded")
    assert (left["action"], left["outcome"]) == ("E", "4")
    assert "could not be deleted" in left["outcomeDesc"]
    named = [e["what"].get("identifier") for e in left["entity"] if "what" in e]
    assert {"system": "http://fhirserver.dev/fhir/sid/recording-daily", "value": other} in named

    deleted_body = test_daily.hook(
        "recording.ready-to-download",
        "rec-ready-10",
        **test_daily.RECORDING
        | {"room_name": room, "start_ts": int(time.time()) - 600, "recording_id": "r-3"},
    )
    fake_daily.recordings.add("r-3")
    assert (await deliver(http, deleted_body)).json() == {"recorded": 1}
    assert fake_daily.recordings == set()
    events_ = await search(http, "AuditEvent?subtype=recording-discarded&_sort=-_lastUpdated")
    deleted = next(e for e in events_ if e["id"] != left["id"])
    assert (deleted["action"], deleted["outcome"]) == ("D", "0")
    assert "r-3" not in str(deleted), "a deleted recording is not named"


async def test_two_consents_with_a_gap_between_them_do_not_cover_the_recording(
    http: httpx.AsyncClient, app: Starlette, fake_daily: test_daily.FakeDaily
) -> None:
    """The recording ran from 30 to 10 minutes ago; one Consent ended 25 minutes ago,
    the next began 15 minutes ago: for ten minutes nothing allowed it."""
    first = {"type": "permit", "period": {"start": instant(-7200), "end": instant(-1500)}}
    second = {"type": "permit", "period": {"start": instant(-900)}}
    await give(http, consent(provision=first))
    await give(http, consent(provision=second))
    room, _ = await started_visit(http, app)
    fake_daily.recordings.add(RECORDING_ID)
    body = test_daily.hook(
        "recording.ready-to-download",
        "rec-ready-1",
        **test_daily.RECORDING
        | {"room_name": room, "start_ts": int(time.time()) - 1800, "duration": 1200},
    )
    assert (await deliver(http, body)).json() == {"recorded": 1}
    assert await search(http, "DocumentReference") == []
    assert fake_daily.recordings == set()


STORED = "2024-05-17T08:00:00Z"


@pytest.mark.parametrize(
    ("given", "stored", "at", "covered"),
    [
        pytest.param("2024-05-17T10:00:00Z", STORED, "2024-05-17T09:59:59Z", False, id="before"),
        pytest.param("2024-05-17T10:00:00Z", STORED, "2024-05-17T10:00:00Z", True, id="at"),
        # A date alone: given by the time the server stored it...
        pytest.param("2024-05-17", STORED, "2024-05-17T07:00:00Z", False, id="day before store"),
        pytest.param("2024-05-17", STORED, "2024-05-17T15:00:00Z", True, id="day after store"),
        # ...or by the end of that day in the latest time zone (UTC-12).
        pytest.param("2024-05-17", "2024-06-01T00:00:00Z", "2024-05-18T11:00:00Z", False, id="-12"),
        pytest.param("2024-05-17", "2024-06-01T00:00:00Z", "2024-05-18T12:00:00Z", True, id="end"),
        pytest.param("2024-05", "2024-06-01T00:00:00Z", "2024-05-31T13:00:00Z", False, id="month"),
        pytest.param(None, STORED, "2024-05-17T07:59:59Z", False, id="undated before store"),
        pytest.param(None, STORED, "2024-05-17T08:00:00Z", True, id="undated at store"),
    ],
)
def test_a_recording_consent_counts_from_when_it_was_given(
    given: str | None, stored: str, at: str, covered: bool
) -> None:
    resource = consent(meta={"lastUpdated": stored})
    del resource["dateTime"]
    if given is not None:
        resource["dateTime"] = given
    moment = datetime.fromisoformat(at)
    assert consent_permits_recording(resource, "Patient/p1", moment) is covered


def test_a_recording_that_does_not_say_when_it_began_cannot_be_shown_covered() -> None:
    now = datetime.now(UTC)
    began = Recording("r1", "https://x.example/r1", "video/mp4", started=now, duration=60)
    unknown = Recording("r2", "https://x.example/r2", "text/plain")
    assert recording_instants([began], now) == [now, now, now + timedelta(seconds=60)]
    assert recording_instants([began, unknown], now) is None


async def test_zoom_files_are_decided_together_and_linked_files_survive_a_later_discard(
    http: httpx.AsyncClient, app: Starlette
) -> None:
    """Zoom reports a recording's files together and deletes a session's recordings
    whole. Linked while the Consent held, the video stays at Zoom when a later file of
    the same session is discarded: that file alone is deleted."""
    fake = test_zoom.FakeZoom()
    context: VisitContext = app.state.visit_context
    zoom = dataclasses.replace(context, provider=test_zoom.make(fake))
    given = await give(http, consent())
    room, started = await started_visit(http, app)
    began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    span = {
        "recording_start": began.isoformat(),
        "recording_end": (began + timedelta(minutes=15)).isoformat(),
    }
    video, chat, transcript = (test_zoom.FILES[i] | span for i in (0, 2, 3))
    session = test_zoom.SESSION_ID
    fake.recordings |= {(session, f["id"]) for f in (video, chat, transcript)}

    def delivery(*files: dict[str, Any]) -> bytes:
        body = json.loads(test_zoom.recording_hook(list(files)))
        body["payload"]["object"]["session_name"] = room
        return json.dumps(body).encode()

    first = delivery(video, chat)
    assert await record_webhook(zoom, test_zoom.signed(first), first) == 2
    linked = await recordings(http, started["encounter"]["id"])
    assert sorted(d["content"][0]["attachment"]["contentType"] for d in linked) == [
        "text/plain",
        "video/mp4",
    ]
    withdrawn = given | {"status": "inactive"}
    assert (await http.put(f"{FHIR}/Consent/{given['id']}", json=withdrawn)).status_code == 200
    second = delivery(video, transcript)
    assert await record_webhook(zoom, test_zoom.signed(second), second) == 1
    assert fake.recordings == {(session, video["id"]), (session, chat["id"])}
    assert len(await recordings(http, started["encounter"]["id"])) == 2
