"""The bulk export engine (fhirserver/bulk/export_*.py) on every store: Bulk Data Access
IG 2.0.0 export.html ("Query Parameters": `_type`, `_since`, `_typeFilter`,
`_elements`; "Endpoint - Group of Patients"; "transactionTime": the files hold the
resources as of kick-off), the NDJSON output (R4 nd-json.html) split per type, and a
job resumed after an interruption writing exactly the same files.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import parse_scopes
from fhirserver.bulk.export_job import (
    EXPORT,
    ExportConfig,
    export_handlers,
    export_status,
    kick_off,
    run_chunk,
)
from fhirserver.bulk.export_request import (
    GROUP,
    PATIENT,
    SYSTEM,
    ExportRequest,
    compartment_of,
    member_ids,
    parse_export,
)
from fhirserver.errors import NotSupported
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.worker import LEASE, JobRunner
from tests.clock import MovableClock

# Near the real time: MongoDB (and mongomock) purge expired records by the real clock.
START = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def clock() -> MovableClock:
    moving = MovableClock()
    moving.move_to(START)
    return moving


def config(tmp_path: Path, chunk: int = 1000, max_bytes: int = 1 << 20) -> ExportConfig:
    return ExportConfig(tmp_path / "exports", timedelta(hours=1), max_bytes, chunk)


async def put(store: Store, clock: MovableClock, resource: dict[str, Any]) -> None:
    context = WriteContext(clock=clock)
    await crud.update(store, context, resource["resourceType"], resource["id"], resource)


def patient(pid: str, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}


def observation(oid: str, pid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


async def seed(store: Store, clock: MovableClock) -> None:
    for pid in ("p1", "p2", "p3"):
        await put(store, clock, patient(pid))
    await put(store, clock, observation("o1", "p1", "1111-1"))
    await put(store, clock, observation("o2", "p1", "2222-2"))
    await put(store, clock, observation("o3", "p2", "1111-1"))
    await put(store, clock, observation("o4", "p3", "3333-3"))
    await put(store, clock, {"resourceType": "Organization", "id": "org1", "name": "Clinic"})


async def export(
    store: Store,
    clock: MovableClock,
    cfg: ExportConfig,
    request: ExportRequest,
    export_id: str = "e1",
) -> dict[str, Any]:
    await kick_off(store, request, clock, export_id)
    await JobRunner(store, export_handlers(store, cfg, clock), clock).run_due()
    status = await export_status(store, export_id, clock())
    assert status is not None and status["state"] == "done", status
    return status


def lines(cfg: ExportConfig, export_id: str, name: str) -> list[dict[str, Any]]:
    text = (cfg.folder / export_id / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


def by_file(cfg: ExportConfig, status: dict[str, Any], export_id: str = "e1") -> dict[str, Any]:
    """file name -> (type, kind, count, sorted ids or the lines themselves)"""
    found: dict[str, Any] = {}
    for record in status["files"]:
        content = lines(cfg, export_id, record["name"])
        assert len(content) == record["count"]
        found[record["name"]] = sorted(r.get("id", json.dumps(r)) for r in content)
    return found


async def test_system_export_one_file_per_type_with_exactly_the_resources(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path)
    status = await export(store, clock, cfg, parse_export(SYSTEM, [], lenient=False))
    assert by_file(cfg, status) == {
        "Observation-1.ndjson": ["o1", "o2", "o3", "o4"],
        "Organization-1.ndjson": ["org1"],
        "Patient-1.ndjson": ["p1", "p2", "p3"],
    }
    assert status["written"] == 8
    first = lines(cfg, "e1", "Patient-1.ndjson")[0]
    assert first["meta"]["versionId"] == "1" and first["name"] == [{"family": "Doe"}]


async def test_a_type_is_split_into_parts_at_the_size_limit(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path, chunk=2, max_bytes=250)
    request = parse_export(SYSTEM, [("_type", "Observation")], lenient=False)
    status = await export(store, clock, cfg, request)
    names = [f["name"] for f in status["files"]]
    assert len(names) > 1 and all(n.startswith("Observation-") for n in names)
    assert all(f["size"] <= 250 or f["count"] == 1 for f in status["files"])
    assert sorted(i for ids in by_file(cfg, status).values() for i in ids) == [
        "o1",
        "o2",
        "o3",
        "o4",
    ]


async def test_two_type_filters_for_one_type_are_ored(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path)
    params = [
        ("_type", "Observation,Patient"),
        ("_typeFilter", "Observation?code=http://loinc.org|2222-2"),
        ("_typeFilter", "Observation?subject=Patient/p3"),
        ("_typeFilter", "Patient?_id=p2"),
    ]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    assert by_file(cfg, status) == {
        "Observation-1.ndjson": ["o2", "o4"],
        "Patient-1.ndjson": ["p2"],
    }


async def test_since_exports_changes_after_the_instant_and_lists_deletions(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    since = START + timedelta(minutes=1)
    clock.move_to(since + timedelta(minutes=1))
    await put(store, clock, patient("p1", family="Updated"))
    await crud.delete(store, WriteContext(clock=clock), "Patient", "p2")
    await crud.delete(store, WriteContext(clock=clock), "Observation", "o3")
    cfg = config(tmp_path)
    params = [("_since", since.isoformat()), ("_type", "Patient,Observation")]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    files = {f["name"]: f for f in status["files"]}
    assert set(files) == {
        "Patient-1.ndjson",
        "deleted-Patient-1.ndjson",
        "deleted-Observation-1.ndjson",
    }
    updated = lines(cfg, "e1", "Patient-1.ndjson")
    assert [(p["id"], p["name"][0]["family"]) for p in updated] == [("p1", "Updated")]
    deletions = lines(cfg, "e1", "deleted-Patient-1.ndjson") + lines(
        cfg, "e1", "deleted-Observation-1.ndjson"
    )
    assert sorted(b["entry"][0]["request"]["url"] for b in deletions) == [
        "Observation/o3",
        "Patient/p2",
    ]
    assert all(b["type"] == "transaction" for b in deletions)
    assert {e["request"]["method"] for b in deletions for e in b["entry"]} == {"DELETE"}
    assert files["deleted-Patient-1.ndjson"]["type"] == "Bundle"


async def test_group_export_holds_only_the_members_compartments(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    group = {
        "resourceType": "Group",
        "id": "g1",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/p1"}},
            {"entity": {"reference": "Patient/p3"}},
        ],
    }
    await put(store, clock, group)
    cfg = config(tmp_path)
    request = compartment_of(parse_export(GROUP, [], lenient=False), member_ids(group, clock()))
    status = await export(store, clock, cfg, request)
    # The Group itself is in its members' compartments (CompartmentDefinition-patient:
    # Group.member); p2, its Observation and the Organization are not.
    assert by_file(cfg, status) == {
        "Group-1.ndjson": ["g1"],
        "Observation-1.ndjson": ["o1", "o2", "o4"],
        "Patient-1.ndjson": ["p1", "p3"],
    }


async def test_patient_export_holds_every_compartment_and_elements_subsets(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path)
    params = [("_elements", "Patient.name,status")]
    status = await export(store, clock, cfg, parse_export(PATIENT, params, lenient=False))
    assert set(by_file(cfg, status)) == {"Observation-1.ndjson", "Patient-1.ndjson"}
    observation_line = lines(cfg, "e1", "Observation-1.ndjson")[0]
    assert "subject" not in observation_line and observation_line["status"] == "final"
    assert observation_line["meta"]["tag"][0]["code"] == "SUBSETTED"
    assert lines(cfg, "e1", "Patient-1.ndjson")[0]["name"] == [{"family": "Doe"}]


async def test_the_export_is_confined_to_what_the_kick_off_access_may_read(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path)
    access = Access(client_id="c1", scopes=parse_scopes("system/Observation.rs?code=1111-1"))
    request = parse_export(SYSTEM, [], lenient=False).with_access(access)
    status = await export(store, clock, cfg, request)
    assert by_file(cfg, status) == {"Observation-1.ndjson": ["o1", "o3"]}


async def test_a_resource_written_mid_export_appears_once_at_its_snapshot_version(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    await put(store, clock, patient("p2", family="Second"))  # version 2, before kick-off
    cfg = config(tmp_path, chunk=1)
    request = parse_export(SYSTEM, [("_type", "Patient")], lenient=False)
    await kick_off(store, request, clock, "e1")
    runner = JobRunner(store, export_handlers(store, cfg, clock), clock)
    job = await store.claim_job([EXPORT], runner.owner, clock(), LEASE)
    assert job is not None
    await run_chunk(store, cfg, clock, job)  # the newest Patient version, p2's, is written
    clock.move_to(START + timedelta(minutes=5))
    await put(store, clock, patient("p2", family="Later"))  # already exported
    await put(store, clock, patient("p1", family="Later"))  # not yet exported
    await put(store, clock, patient("p1", family="Later still"))
    await crud.delete(store, WriteContext(clock=clock), "Patient", "p3")
    await put(store, clock, patient("p4"))  # created after kick-off
    await runner.run_due()
    status = await export_status(store, "e1", clock())
    assert status is not None and status["state"] == "done"
    exported = lines(cfg, "e1", "Patient-1.ndjson")
    assert sorted((p["id"], p["meta"]["versionId"], p["name"][0]["family"]) for p in exported) == [
        ("p1", "1", "Doe"),
        ("p2", "2", "Second"),
        ("p3", "1", "Doe"),
    ]


async def test_an_interrupted_job_resumes_into_exactly_the_same_files(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed(store, clock)
    cfg = config(tmp_path, chunk=2, max_bytes=400)
    request = parse_export(SYSTEM, [("_type", "Patient,Observation")], lenient=False)
    whole = await export(store, clock, cfg, request, "whole")

    await kick_off(store, request, clock, "cut")
    runner = JobRunner(store, export_handlers(store, cfg, clock), clock)
    job = await store.claim_job([EXPORT], "first-process", clock(), LEASE)
    assert job is not None
    await run_chunk(store, cfg, clock, job)
    # The next chunk was half written when the process died: bytes past the recorded
    # size, and a part file the progress never recorded.
    folder = cfg.folder / "cut"
    for path in folder.iterdir():
        with path.open("ab") as handle:
            handle.write(b'{"resourceType": "Patient", "id": "half' + b" " * 5000)
    for record in whole["files"]:
        if not (folder / record["name"]).exists():
            (folder / record["name"]).write_text("left over\n")
    await runner.run_due()
    cut = await export_status(store, "cut", clock())
    assert cut is not None and cut["files"] == whole["files"]
    for record in whole["files"]:
        name = record["name"]
        assert (folder / name).read_bytes() == (cfg.folder / "whole" / name).read_bytes()


async def test_invalid_parameters_are_refused_or_reported_when_lenient(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    bad = [("_type", "Patient,Nonsense"), ("_outputFormat", "text/csv"), ("_until", "2020")]
    with pytest.raises(NotSupported):
        parse_export(SYSTEM, bad, lenient=False)
    with pytest.raises(NotSupported):
        parse_export(SYSTEM, [("_typeFilter", "Observation?subject.name=x")], lenient=False)
    await seed(store, clock)
    cfg = config(tmp_path)
    status = await export(store, clock, cfg, parse_export(SYSTEM, bad, lenient=True))
    assert by_file(cfg, status)["Patient-1.ndjson"] == ["p1", "p2", "p3"]
    errors = lines(cfg, "e1", "error-OperationOutcome-1.ndjson")
    assert len(errors) == 3 and all(e["resourceType"] == "OperationOutcome" for e in errors)
