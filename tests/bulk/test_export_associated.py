"""Bulk export's associated data on every store: Bulk Data Access IG 2.0.0 export.html
"includeAssociatedData" and its CodeSystem include-associated-data
(`LatestProvenanceResources`, `RelevantProvenanceResources`; any other value refused, or
reported under lenient handling): the Provenance about what the export returned, as of
the snapshot, written once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import parse_scopes
from fhirserver.bulk.export_job import EXPORT, export_handlers, export_status, kick_off, run_chunk
from fhirserver.bulk.export_request import GROUP, SYSTEM, compartment_of, parse_export
from fhirserver.errors import NotSupported
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.worker import LEASE, JobRunner
from tests.bulk.test_export_engine import START, by_file, config, export, lines, put, seed
from tests.clock import MovableClock

LATEST, RELEVANT = "LatestProvenanceResources", "RelevantProvenanceResources"


@pytest.fixture
def clock() -> MovableClock:
    moving = MovableClock()
    moving.move_to(START)
    return moving


def provenance(
    pid: str, recorded: str, *targets: str, patient: str | None = None
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": pid,
        "target": [{"reference": target} for target in targets],
        "recorded": recorded,
        "agent": [{"who": {"reference": "Organization/org1"}}],
    }
    if patient is not None:
        resource["patient"] = {"reference": f"Patient/{patient}"}
    return resource


async def seed_provenance(store: Store, clock: MovableClock) -> None:
    await seed(store, clock)
    for resource in (
        provenance("pr-o1-old", "2024-01-01T00:00:00Z", "Observation/o1"),
        provenance("pr-o1-new", "2024-06-01T00:00:00Z", "Observation/o1"),
        # A tie for o2: both are the latest.
        provenance("pr-o2-a", "2024-03-01T00:00:00Z", "Observation/o2"),
        provenance("pr-o2-b", "2024-03-01T00:00:00+00:00", "Observation/o2/_history/1"),
        # About two resources: the latest for p3, not for o1.
        provenance("pr-both", "2024-02-01T00:00:00Z", "Observation/o1", "Patient/p3"),
        # About an Organization and about another Provenance only.
        provenance("pr-org", "2024-01-01T00:00:00Z", "Organization/org1"),
        provenance("pr-meta", "2025-01-01T00:00:00Z", "Provenance/pr-o1-old"),
    ):
        await put(store, clock, resource)


def ids(cfg: Any, status: dict[str, Any], export_id: str = "e1") -> list[str]:
    found: list[str] = by_file(cfg, status, export_id).get("Provenance-1.ndjson", [])
    return found


async def test_relevant_is_every_provenance_about_a_returned_resource(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed_provenance(store, clock)
    cfg = config(tmp_path)
    params = [("_type", "Observation,Patient"), ("includeAssociatedData", RELEVANT)]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    # Not pr-org (Organization is not exported), not pr-meta (targets a Provenance).
    assert ids(cfg, status) == ["pr-both", "pr-o1-new", "pr-o1-old", "pr-o2-a", "pr-o2-b"]
    assert status["written"] == 7 + 5


async def test_latest_keeps_the_newest_per_resource_and_ties(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed_provenance(store, clock)
    cfg = config(tmp_path, chunk=2)  # the Provenance pages span chunks
    params = [("_type", "Observation,Patient"), ("includeAssociatedData", LATEST)]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    assert ids(cfg, status) == ["pr-both", "pr-o1-new", "pr-o2-a", "pr-o2-b"]


async def test_only_targets_the_export_selects_count(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed_provenance(store, clock)
    cfg = config(tmp_path)
    # _typeFilter leaves o1 out; the Group holds p1 only: p3 is out too.
    group = {"resourceType": "Group", "id": "g", "actual": True, "type": "person"}
    await put(store, clock, group)
    params = [
        ("_type", "Observation,Patient"),
        ("_typeFilter", "Observation?code=http://loinc.org|2222-2"),
        ("includeAssociatedData", RELEVANT),
    ]
    request = compartment_of(parse_export(GROUP, params, lenient=False), ["p1"])
    status = await export(store, clock, cfg, request)
    assert by_file(cfg, status)["Observation-1.ndjson"] == ["o2"]
    assert ids(cfg, status) == ["pr-o2-a", "pr-o2-b"]


async def test_a_provenance_exported_as_a_type_is_not_written_twice(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed_provenance(store, clock)
    cfg = config(tmp_path)
    params = [
        ("_type", "Observation,Provenance"),
        ("_typeFilter", "Provenance?_id=pr-o1-old,pr-org"),
        ("includeAssociatedData", RELEVANT),
    ]
    await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=False))
    exported = lines(cfg, "e1", "Provenance-1.ndjson")
    assert sorted(p["id"] for p in exported) == [
        "pr-both",
        "pr-o1-new",
        "pr-o1-old",
        "pr-o2-a",
        "pr-o2-b",
        "pr-org",
    ]


async def test_the_provenance_is_the_snapshots_and_the_access_confines_it(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    await seed_provenance(store, clock)
    cfg = config(tmp_path, chunk=1)
    params = [("_type", "Observation"), ("includeAssociatedData", LATEST)]
    await kick_off(store, parse_export(SYSTEM, params, lenient=False), clock, "e1")
    runner = JobRunner(store, export_handlers(store, cfg, clock), clock)
    job = await store.claim_job([EXPORT], runner.owner, clock(), LEASE)
    assert job is not None
    await run_chunk(store, cfg, clock, job)
    # After kick-off: a newer Provenance for o2, and pr-o1-new deleted. Neither counts.
    clock.move_to(START + timedelta(minutes=5))
    await put(store, clock, provenance("pr-o2-late", "2030-01-01T00:00:00Z", "Observation/o2"))
    await crud.delete(store, WriteContext(clock=clock), "Provenance", "pr-o1-new")
    await runner.run_due()
    status = await export_status(store, "e1", clock())
    assert status is not None and status["state"] == "done"
    assert ids(cfg, status) == ["pr-o1-new", "pr-o2-a", "pr-o2-b"]

    # A token that may read Observations but no Provenance gets none.
    cfg = config(tmp_path / "confined")
    access = Access(client_id="c", scopes=parse_scopes("system/Observation.rs"))
    request = parse_export(SYSTEM, params, lenient=False).with_access(access)
    status = await export(store, clock, cfg, request, "e2")
    assert ids(cfg, status, export_id="e2") == [] and status["written"] == 4


async def test_other_codes_are_refused_or_reported_when_lenient(
    store: Store, clock: MovableClock, tmp_path: Path
) -> None:
    with pytest.raises(NotSupported, match="_customThing"):
        parse_export(SYSTEM, [("includeAssociatedData", f"{LATEST},_customThing")], lenient=False)
    await seed_provenance(store, clock)
    cfg = config(tmp_path)
    params = [("_type", "Patient"), ("includeAssociatedData", f"_customThing,{LATEST}")]
    status = await export(store, clock, cfg, parse_export(SYSTEM, params, lenient=True))
    assert ids(cfg, status) == ["pr-both"]
    [error] = lines(cfg, "e1", "error-OperationOutcome-1.ndjson")
    assert "_customThing" in error["issue"][0]["diagnostics"]
