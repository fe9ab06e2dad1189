"""`fhirserver import` (fhirserver/bulk/importer.py and the `import` command): Bundle and
NDJSON files into the store through the same interactions as the REST API.

R4 http.html#transaction (a transaction Bundle is written whole or not at all),
http.html#batch (a batch entry fails alone), nd-json.html (one resource a line: a bad
line costs only itself, and is reported as "file line N"), json.html#primitive (decimals
keep their exact text, also through the worker processes). Importing the same files
twice leaves the same resources, not two copies. `--strict` stops at the first problem.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.bulk import sources
from fhirserver.bulk.importer import ImportReport, _pool, import_files
from fhirserver.bulk.prepare import Problem
from fhirserver.config import Settings
from fhirserver.cpu import GC_THRESHOLDS
from fhirserver.storage.base import Store
from fhirserver.storage.sqlite import SqliteStore
from tests.backends import BACKENDS, make_backend

CURRENT_SQL = (
    "SELECT count(*) FROM resources r JOIN versions v ON v.seq = r.seq WHERE v.body IS NOT NULL"
)
PATIENT_UUID = "2c1a8f0e-7f4b-4f7e-9a36-8f6c3e1d5b10"
ENCOUNTER_UUID = "9b3e6a2d-1c4f-4e8a-8d7b-0a5f2c6e9d41"
OBSERVATION_UUID = "5e7d9c1b-3a2f-4b6e-8c0d-1f4a7e2b9c63"
ORGANIZATION_UUID = "0d3b2c6a-8e1f-4a7d-9b5c-3e6f1a2d4c87"
CLI_TIMEOUT = 120.0  # seconds for one `fhirserver import` process


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[SqliteStore]:
    """The store the `settings`, `client` and `dump` fixtures also look at."""
    opened = SqliteStore(settings.sqlite_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


Rows = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture
def rows(settings: Settings) -> Rows:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(settings.sqlite_path)) as connection:
            return connection.execute(sql).fetchall()

    return query


def current_count(rows: Rows) -> int:
    return int(rows(CURRENT_SQL)[0][0])


def current_ids(rows: Rows) -> list[str]:
    return [
        f"{t}/{i}"
        for t, i in rows(
            "SELECT r.type, r.id FROM resources r JOIN versions v ON v.seq = r.seq"
            " WHERE v.body IS NOT NULL ORDER BY r.type, r.id"
        )
    ]


async def body(store: Store, resource_type: str, resource_id: str) -> Any:
    version = await store.read(resource_type, resource_id)
    assert version is not None and version.body is not None, f"{resource_type}/{resource_id}"
    return json.loads(version.body, parse_float=str)


def transaction_bundle() -> dict[str, Any]:
    patient = f"urn:uuid:{PATIENT_UUID}"
    encounter = f"urn:uuid:{ENCOUNTER_UUID}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "urn:test:mrn", "value": "1001"}],
                    "name": [{"family": "Chalmers"}],
                    # The conditional create below: resolved when written, not before.
                    "managingOrganization": {"reference": f"urn:uuid:{ORGANIZATION_UUID}"},
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": encounter,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": patient},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
            {
                "fullUrl": f"urn:uuid:{OBSERVATION_UUID}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": patient},
                    "encounter": {"reference": encounter},
                    "valueQuantity": {"value": 72.5, "unit": "kg"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": f"urn:uuid:{ORGANIZATION_UUID}",
                "resource": {
                    "resourceType": "Organization",
                    "identifier": [{"system": "urn:test:org", "value": "acme"}],
                    "name": "Acme",
                },
                "request": {
                    "method": "POST",
                    "url": "Organization",
                    "ifNoneExist": "identifier=urn:test:org|acme",
                },
            },
        ],
    }


def observation_line(number: int, value: str = "1.50") -> str:
    text = json.dumps(
        {
            "resourceType": "Observation",
            "id": f"obs-{number}",
            "status": "final",
            "code": {"text": f"reading {number}"},
            "subject": {"reference": f"Patient/{PATIENT_UUID}"},
            "valueQuantity": {"value": "@VALUE@", "unit": "mg"},
        }
    )
    return text.replace('"@VALUE@"', value)


def write_ndjson(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def sample(tmp_path: Path) -> list[Path]:
    """A transaction Bundle, and NDJSON that refers to its Patient: 4 + 5 resources."""
    data = tmp_path / "data"
    data.mkdir()
    write_json(data / "a-bundle.json", transaction_bundle())
    write_ndjson(data / "b-observations.ndjson", [observation_line(n) for n in range(1, 6)])
    return [data / "a-bundle.json", data / "b-observations.ndjson"]


async def test_imports_bundle_and_ndjson(
    store: SqliteStore, sample: list[Path], rows: Rows, client: httpx.AsyncClient
) -> None:
    report = await import_files(store, [str(sample[0].parent)])

    assert report == ImportReport(files=2, written=9, problems=[], stopped=False)
    assert current_count(rows) == 9
    # The transaction's placeholders became the ids, and references point at them.
    observation = await body(store, "Observation", OBSERVATION_UUID)
    assert observation["subject"] == {"reference": f"Patient/{PATIENT_UUID}"}
    assert observation["encounter"] == {"reference": f"Encounter/{ENCOUNTER_UUID}"}
    assert (await body(store, "Observation", "obs-3"))["code"] == {"text": "reading 3"}
    # What was imported is there for the REST API too, searchable by its references.
    read = await client.get(f"/Patient/{PATIENT_UUID}")
    assert read.status_code == 200, read.text
    assert read.json()["meta"]["versionId"] == "1"
    found = await client.get("/Observation", params={"subject": f"Patient/{PATIENT_UUID}"})
    assert found.status_code == 200, found.text
    assert len(found.json()["entry"]) == 6
    by_encounter = await client.get("/Observation", params={"encounter": ENCOUNTER_UUID})
    assert [e["resource"]["id"] for e in by_encounter.json()["entry"]] == [OBSERVATION_UUID]


async def test_importing_twice_makes_no_copies(
    store: SqliteStore, sample: list[Path], rows: Rows
) -> None:
    first = await import_files(store, [str(path) for path in sample])
    ids = current_ids(rows)
    assert first.problems == [] and len(ids) == 9

    second = await import_files(store, [str(path) for path in sample])

    assert second.problems == []
    assert current_ids(rows) == ids
    assert current_count(rows) == 9
    # The conditional create found the Organization the first run made, and the
    # Patient's link to it names that one.
    [(organization_id,)] = rows("SELECT id FROM versions WHERE type = 'Organization'")
    assert organization_id != ORGANIZATION_UUID
    # The rest were updated in place: a second version each, under the same id.
    patient = await body(store, "Patient", PATIENT_UUID)
    assert patient["meta"]["versionId"] == "2"
    assert patient["managingOrganization"] == {"reference": f"Organization/{organization_id}"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_importing_twice_into_every_backend(
    backend: str, sample: list[Path], tmp_path: Path
) -> None:
    """The same import on each store: kept ids, one conditional Organization, and the
    second run updating in place."""
    chosen = make_backend(backend, tmp_path / "import.sqlite")
    store = chosen.store
    await store.open()
    try:
        for run in (1, 2):
            report = await import_files(store, [str(path) for path in sample])
            assert report.problems == [] and report.written == 9
            current = await store.scan(None, 100)
            assert len(current) == 9 and await store.count() == 9
            assert {v.version for v in current if v.resource_type != "Organization"} == {run}
        [organization] = [v for v in current if v.resource_type == "Organization"]
        patient = await body(store, "Patient", PATIENT_UUID)
        assert patient["managingOrganization"] == {"reference": f"Organization/{organization.id}"}
        observation = await body(store, "Observation", OBSERVATION_UUID)
        assert observation["encounter"] == {"reference": f"Encounter/{ENCOUNTER_UUID}"}
    finally:
        await store.close()
        chosen.cleanup()


async def test_bad_line_is_reported_and_the_rest_written(
    store: SqliteStore, sample: list[Path], rows: Rows
) -> None:
    ndjson = sample[1]
    lines = ndjson.read_text().splitlines()
    lines[2] = '{"resourceType": "Observation", "id": "obs-3", "status": "final", "colour": 1}'
    write_ndjson(ndjson, lines)
    seen: list[Problem] = []

    report = await import_files(store, [str(path) for path in sample], on_problem=seen.append)

    assert report.written == 8
    assert not report.stopped
    [problem] = report.problems
    assert seen == [problem]
    assert problem.where == f"{ndjson} line 3"
    assert "colour" in problem.message
    assert current_count(rows) == 8
    assert await store.read("Observation", "obs-3") is None
    assert await store.read("Observation", "obs-4") is not None


async def test_line_that_cannot_be_written_is_reported_and_the_rest_written(
    store: SqliteStore, tmp_path: Path, rows: Rows
) -> None:
    # Valid on its own, but its conditional reference matches nothing in the store.
    lines = [observation_line(n) for n in range(1, 5)]
    lines[1] = lines[1].replace(f"Patient/{PATIENT_UUID}", "Patient?identifier=urn:test:mrn|none")
    ndjson = write_ndjson(tmp_path / "observations.ndjson", lines)

    report = await import_files(store, [str(ndjson)])

    assert report.written == 3
    [problem] = report.problems
    assert problem.where == f"{ndjson} line 2"
    assert "matches no resource" in problem.message
    assert current_ids(rows) == ["Observation/obs-1", "Observation/obs-3", "Observation/obs-4"]


async def test_resource_repeated_in_one_file_ends_as_its_last_line(
    store: SqliteStore, tmp_path: Path
) -> None:
    # Both lines in one chunk: one unit of work may not write a resource twice, so the
    # chunk goes one line at a time, and the later line is the current version.
    ndjson = write_ndjson(
        tmp_path / "observations.ndjson",
        [observation_line(1, "1.0"), observation_line(2), observation_line(1, "2.0")],
    )

    report = await import_files(store, [str(ndjson)])

    assert report.problems == [] and report.written == 3
    latest = await body(store, "Observation", "obs-1")
    assert latest["valueQuantity"]["value"] == "2.0"
    assert latest["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    "spoil",
    ["invalid", "unwritable"],
    ids=["invalid-entry", "entry-fails-on-write"],
)
async def test_strict_writes_nothing_of_a_bad_transaction(
    store: SqliteStore,
    tmp_path: Path,
    dump: Callable[[], list[tuple[Any, ...]]],
    spoil: str,
) -> None:
    before_file = write_ndjson(tmp_path / "a.ndjson", [observation_line(1)])
    await import_files(store, [str(before_file)])
    before = dump()
    bundle = transaction_bundle()
    if spoil == "invalid":
        bundle["entry"][2]["resource"]["valueQuantity"]["value"] = "heavy"
    else:
        bundle["entry"][2]["resource"]["performer"] = [
            {"reference": "Practitioner?identifier=urn:test:npi|nobody"}
        ]
    path = write_json(tmp_path / "b.json", bundle)
    after_file = write_ndjson(tmp_path / "c.ndjson", [observation_line(2)])

    report = await import_files(store, [str(path), str(after_file)], strict=True)

    assert report.stopped
    assert report.written == 0
    [problem] = report.problems
    assert problem.where.startswith(str(path))
    assert "entry 2" in problem.where or "entry[2]" in problem.message
    assert dump() == before


async def test_without_strict_a_bad_transaction_costs_only_itself(
    store: SqliteStore, tmp_path: Path, rows: Rows
) -> None:
    bundle = transaction_bundle()
    del bundle["entry"][1]["resource"]["status"]  # 1..1 in R4
    bad = write_json(tmp_path / "a.json", bundle)
    good = write_ndjson(tmp_path / "b.ndjson", [observation_line(1), observation_line(2)])

    report = await import_files(store, [str(bad), str(good)])

    assert not report.stopped
    assert [problem.where for problem in report.problems] == [f"{bad} entry 1"]
    assert current_ids(rows) == ["Observation/obs-1", "Observation/obs-2"]


def patient_bundles(tmp_path: Path, count: int, unwritable: int | None = None) -> list[Path]:
    """`count` transaction Bundles, each of its own Patient (MRN 100 + n) with an
    Encounter and an Observation of that Patient; Bundle `unwritable` fails on write."""
    paths = []
    for n in range(count):
        # fullUrls of its own (an import writes a urn:uuid entry under that uuid); the
        # Patient's is a URL, so the server chooses its id.
        text = json.dumps(transaction_bundle())
        for uuid in (ENCOUNTER_UUID, OBSERVATION_UUID):
            text = text.replace(uuid, f"{uuid[:-2]}{n:02d}")
        text = text.replace(f"urn:uuid:{PATIENT_UUID}", f"https://example.org/fhir/Patient/{n}")
        bundle = json.loads(text)
        bundle["entry"][0]["resource"]["identifier"][0]["value"] = str(100 + n)
        if n == unwritable:
            bundle["entry"][2]["resource"]["performer"] = [
                {"reference": "Practitioner?identifier=urn:test:npi|nobody"}
            ]
        paths.append(write_json(tmp_path / f"bundle-{n}.json", bundle))
    return paths


async def subjects_of_observations(store: Store, rows: Rows) -> list[str]:
    """The MRN of each Observation's subject, reached through the references as
    written, with the Encounter it names checked to be of the same Patient."""
    found = []
    for (observation_id,) in rows("SELECT id FROM resources WHERE type = 'Observation'"):
        observation = await body(store, "Observation", observation_id)
        patient_id = observation["subject"]["reference"].removeprefix("Patient/")
        encounter_id = observation["encounter"]["reference"].removeprefix("Encounter/")
        encounter = await body(store, "Encounter", encounter_id)
        assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
        found.append((await body(store, "Patient", patient_id))["identifier"][0]["value"])
    return sorted(found)


async def test_consecutive_bundles_share_one_commit(
    store: SqliteStore, tmp_path: Path, rows: Rows
) -> None:
    paths = patient_bundles(tmp_path, 6)
    commits: list[str] = []
    store._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    report = await import_files(store, [str(path) for path in paths])

    assert (report.written, report.problems) == (6 * 4, [])
    assert commits == ["COMMIT"]
    assert await subjects_of_observations(store, rows) == [str(100 + n) for n in range(6)]


async def test_a_bundle_failing_in_a_shared_unit_costs_only_itself(
    store: SqliteStore, tmp_path: Path, rows: Rows
) -> None:
    """The shared unit of work rolls back whole, and each Bundle is written alone, from
    its file again: the failed attempt had given the entries ids and rewritten their
    references, which must not leak into the Bundles written afterwards."""
    paths = patient_bundles(tmp_path, 6, unwritable=3)

    report = await import_files(store, [str(path) for path in paths])

    [problem] = report.problems
    assert problem.where == str(paths[3]) and "entry[2]" in problem.message
    assert report.written == 5 * 4
    assert await subjects_of_observations(store, rows) == ["100", "101", "102", "104", "105"]
    assert len(rows("SELECT id FROM resources WHERE type = 'Organization'")) == 1
    assert len(rows("SELECT id FROM resources WHERE type = 'Patient'")) == 5


@pytest.mark.parametrize(
    "spoil",
    ["invalid", "unwritable"],
    ids=["invalid-line", "line-fails-on-write"],
)
async def test_strict_ndjson_writes_the_lines_before_the_bad_one_and_none_after(
    store: SqliteStore,
    tmp_path: Path,
    rows: Rows,
    monkeypatch: pytest.MonkeyPatch,
    spoil: str,
) -> None:
    # Chunks of 3 lines: the bad line 5 is in the middle of the second chunk.
    monkeypatch.setattr(sources, "CHUNK_LINES", 3)
    lines = [observation_line(n) for n in range(1, 10)]
    if spoil == "invalid":
        lines[4] = "{not json"
    else:
        lines[4] = lines[4].replace(
            f"Patient/{PATIENT_UUID}", "Patient?identifier=urn:test:mrn|none"
        )
    ndjson = write_ndjson(tmp_path / "observations.ndjson", lines)
    later = write_ndjson(tmp_path / "later.ndjson", [observation_line(10)])

    report = await import_files(store, [str(ndjson), str(later)], strict=True)

    assert report.stopped
    [problem] = report.problems
    assert problem.where == f"{ndjson} line 5"
    assert current_ids(rows) == [f"Observation/obs-{n}" for n in range(1, 5)]
    assert report.written == 4


async def test_batch_entry_failing_writes_the_others(
    store: SqliteStore, tmp_path: Path, rows: Rows
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "kept-1"},
                "request": {"method": "PUT", "url": "Patient/kept-1"},
            },
            {
                # Fails on write: there is no version 3 to match.
                "resource": {"resourceType": "Patient", "id": "stale"},
                "request": {"method": "PUT", "url": "Patient/stale", "ifMatch": 'W/"3"'},
            },
            {
                # Fails validation.
                "resource": {"resourceType": "Patient", "id": "odd", "gender": 7},
                "request": {"method": "PUT", "url": "Patient/odd"},
            },
            {
                "resource": {"resourceType": "Patient", "id": "kept-2"},
                "request": {"method": "PUT", "url": "Patient/kept-2"},
            },
        ],
    }
    path = write_json(tmp_path / "batch.json", bundle)

    report = await import_files(store, [str(path)])

    assert report.written == 2
    assert sorted(problem.where for problem in report.problems) == [
        f"{path} entry 1",
        f"{path} entry 2",
    ]
    assert current_ids(rows) == ["Patient/kept-1", "Patient/kept-2"]


async def test_worker_processes_keep_decimals_order_and_line_numbers(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many small chunks, so that two workers have several in flight at once.
    monkeypatch.setattr(sources, "CHUNK_LINES", 2)
    values = ["1.50", "0.10", "100.000", "2.0e-3", "-0.0", "12345678901234567890.5"]
    lines = [observation_line(n, value) for n, value in enumerate(values, 1)]
    # The same resource again, later in the file: the later line must win.
    lines.append(observation_line(1, "9.90"))
    lines.append("{broken")
    ndjson = write_ndjson(tmp_path / "observations.ndjson", lines)
    bundle = transaction_bundle()
    bundle["entry"][2]["resource"]["valueQuantity"]["value"] = "@WEIGHT@"
    bundle_path = tmp_path / "bundle.json"
    bundle_path.write_text(json.dumps(bundle).replace('"@WEIGHT@"', "72.50"))

    report = await import_files(store, [str(bundle_path), str(ndjson)], workers=2)

    assert report.written == 4 + len(values) + 1
    assert [problem.where for problem in report.problems] == [f"{ndjson} line 8"]
    weight = await body(store, "Observation", OBSERVATION_UUID)
    assert weight["valueQuantity"]["value"] == "72.50"
    first = await body(store, "Observation", "obs-1")
    assert first["valueQuantity"]["value"] == "9.90"
    assert first["meta"]["versionId"] == "2"
    for number, value in enumerate(values[1:], 2):
        stored = await store.read("Observation", f"obs-{number}")
        assert stored is not None and stored.body is not None
        assert f'"value":{value},'.encode() in stored.body, stored.body


async def test_progress_counts_bytes_up_to_the_total(
    store: SqliteStore, sample: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_LINES", 2)
    calls: list[tuple[int, int, int]] = []

    await import_files(store, [str(path) for path in sample], progress=lambda *c: calls.append(c))

    total = sum(path.stat().st_size for path in sample)
    # The Bundle, then the 5 NDJSON lines in chunks of 2, 2 and 1.
    assert len(calls) == 4
    assert all(call[1] == total for call in calls)
    done = [call[0] for call in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert done[0] == sample[0].stat().st_size
    assert done[-1] == total
    assert [call[2] for call in calls] == [4, 6, 8, 9]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhirserver", "import", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_cli_imports_and_prints_a_summary(sample: list[Path], tmp_path: Path) -> None:
    store = tmp_path / "cli.sqlite"
    done = run_cli(str(sample[0].parent), "--store", str(store), "--workers", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fhirserver: imported 9 resources from 2 files"), done.stdout
    assert "; 0 problems" in done.stdout
    assert "Traceback" not in done.stderr
    with closing(sqlite3.connect(store)) as connection:
        assert connection.execute(CURRENT_SQL).fetchone() == (9,)


def test_cli_reports_a_bad_line_and_fails(sample: list[Path], tmp_path: Path) -> None:
    ndjson = sample[1]
    lines = ndjson.read_text().splitlines()
    lines[3] = "this is not JSON"
    write_ndjson(ndjson, lines)
    store = tmp_path / "cli.sqlite"

    done = run_cli(*map(str, sample), "--store", str(store), cwd=tmp_path)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{ndjson} line 4" in done.stderr
    assert "not valid JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert "fhirserver: imported 8 resources from 2 files" in done.stdout
    assert "; 1 problems" in done.stdout


def test_cli_strict_says_it_stopped(sample: list[Path], tmp_path: Path) -> None:
    ndjson = sample[1]
    lines = ndjson.read_text().splitlines()
    lines[0] = "[]"
    write_ndjson(ndjson, lines)
    store = tmp_path / "cli.sqlite"

    done = run_cli(*map(str, sample), "--store", str(store), "--strict", cwd=tmp_path)

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{ndjson} line 1" in done.stderr
    assert "fhirserver: imported 4 resources from 2 files" in done.stdout
    assert "(stopped: --strict)" in done.stdout


def test_cli_missing_path_is_a_usage_error(sample: list[Path], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    done = run_cli(
        str(sample[0]), str(missing), "--store", str(tmp_path / "x.sqlite"), cwd=tmp_path
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "no-such-dir" in done.stderr
    assert "usage:" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    # Refused before the store was opened: a typo leaves no empty store behind.
    assert not (tmp_path / "x.sqlite").exists()


def test_worker_processes_collect_garbage_as_rarely_as_the_server() -> None:
    # A tenth of a worker's time went to the collector at Python's default thresholds.
    pool = _pool(1)
    assert pool is not None
    try:
        assert pool.submit(gc.get_threshold).result(timeout=60) == GC_THRESHOLDS
    finally:
        pool.shutdown()
