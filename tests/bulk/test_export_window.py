"""Bulk export on every store: Bulk Data Access IG 2.0.0 export.html `_until` (resources
last changed before the instant, deletions too) next to `_since`; the members of a Group
(R4 group.html: `Group.actual`, `Group.member.period`, `member.inactive`); and a kick-off
that died half way never leaves an export "running" for ever (issue 14, "Jobs are
durable").
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirserver.bulk.export_job import (
    RUNNING_FOR,
    export_handlers,
    export_status,
    kick_off,
    running_exports,
)
from fhirserver.bulk.export_request import SYSTEM, member_ids, parse_export
from fhirserver.errors import NotSupported
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.worker import JobRunner
from tests.bulk.test_export_engine import START, by_file, config, export, lines, patient, put
from tests.clock import MovableClock


@pytest.fixture
def clock() -> MovableClock:
    moving = MovableClock()
    moving.move_to(START)
    return moving


async def test_until_exports_what_last_changed_before_the_instant(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    for pid in ("p1", "p2", "p3", "p4"):
        await put(store, clock, patient(pid))
    since, until = START + timedelta(minutes=1), START + timedelta(minutes=3)
    clock.move_to(since + timedelta(minutes=1))  # inside the window
    await put(store, clock, patient("p1", family="Inside"))
    await crud.delete(store, WriteContext(clock=clock), "Patient", "p2")
    clock.move_to(until)  # at the instant: not before it
    await put(store, clock, patient("p3", family="Too late"))
    await crud.delete(store, WriteContext(clock=clock), "Patient", "p4")
    cfg = config(tmp_path)
    params = [("_since", since.isoformat()), ("_until", until.isoformat())]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    assert by_file(cfg, status) == {
        "Patient-1.ndjson": ["p1"],
        "deleted-Patient-1.ndjson": [
            '{"resourceType": "Bundle", "type": "transaction", "entry": '
            '[{"request": {"method": "DELETE", "url": "Patient/p2"}}]}'
        ],
    }
    only_until = parse_export(SYSTEM, [("_until", until.isoformat())], lenient=False)
    status = await export(store, clock, cfg, only_until, "e2")
    # Without _since nothing deleted is listed; p3 and p4 changed at the instant.
    assert by_file(cfg, status, "e2") == {"Patient-1.ndjson": ["p1"]}
    assert [p["name"][0]["family"] for p in lines(cfg, "e2", "Patient-1.ndjson")] == ["Inside"]


def test_an_invalid_until_is_refused_or_reported_when_lenient() -> None:
    for value in ("2020-01-01", "yesterday", "2020-01-01T00:00:00"):
        with pytest.raises(NotSupported, match="_until"):
            parse_export(SYSTEM, [("_until", value)], lenient=False)
    lenient = parse_export(SYSTEM, [("_until", "2020")], lenient=True)
    assert lenient.until is None and "_until" in lenient.problems[0]


def group(*members: dict[str, Any], actual: bool = True) -> dict[str, Any]:
    return {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": actual,
        "member": list(members),
    }


def test_group_members_now_by_period_and_inactive() -> None:
    now = START
    day = timedelta(days=1)
    members = [
        {"entity": {"reference": "Patient/always"}},
        {"entity": {"reference": "Patient/current"}, "period": {"start": "2001-01-01"}},
        {
            "entity": {"reference": "Patient/ended"},
            "period": {"start": "2001-01-01", "end": (now - day).isoformat()},
        },
        {"entity": {"reference": "Patient/later"}, "period": {"start": (now + day).isoformat()}},
        # Ends today, given as a date: a member until the day is over.
        {"entity": {"reference": "Patient/today"}, "period": {"end": now.date().isoformat()}},
        {"entity": {"reference": "Patient/left"}, "inactive": True},
        {"entity": {"reference": "Device/d1"}},
    ]
    assert member_ids(group(*members), now) == ("always", "current", "today")


def test_a_definitional_group_has_no_members_to_export() -> None:
    listed = {"entity": {"reference": "Patient/p1"}}
    assert member_ids(group(listed, actual=False), START) == ()
    assert member_ids(group(listed), START) == ("p1",)


async def test_a_kick_off_that_died_before_its_job_frees_the_clients_slot(
    store: Store, clock: MovableClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed() -> Any:
        raise RuntimeError("the process died here")

    request = parse_export(SYSTEM, [], lenient=False)
    with monkeypatch.context() as patched:
        patched.setattr(store, "unit_of_work", killed)
        with pytest.raises(RuntimeError):
            await kick_off(store, request, clock, "dead")
    # What a client sees meanwhile: one export of theirs running (they were never told
    # of it: the 202 is sent after the job is recorded).
    assert await running_exports(store, None, clock()) == 1
    clock.move_to(START + RUNNING_FOR + timedelta(seconds=1))
    assert await running_exports(store, None, clock()) == 0
    assert await export_status(store, "dead", clock()) is None


async def test_an_export_outlasting_its_running_record_still_finishes(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await put(store, clock, patient("p1"))
    cfg = config(tmp_path)
    await kick_off(store, parse_export(SYSTEM, [], lenient=False), clock, "slow")
    # No process ran the job for an hour (a server stopped, then started again).
    clock.move_to(START + timedelta(hours=1))
    assert await export_status(store, "slow", clock()) is None
    await JobRunner(store, export_handlers(store, cfg, clock), clock).run_due()
    status = await export_status(store, "slow", clock())
    assert status is not None and status["state"] == "done"
    assert by_file(cfg, status, "slow") == {"Patient-1.ndjson": ["p1"]}
