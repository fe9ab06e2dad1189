"""How `fhirserver import` turns a chunk into entries that keep their ids
(fhirserver/bulk/prepare.py), so that importing the same files twice makes no copies.

R4 http.html#transaction and bundle.html#references: a transaction's creates with
`urn:uuid:` fullUrls, and the references to them, become updates of `Type/<uuid>`; a
conditional create (`ifNoneExist`) stays one; a collection's resources and NDJSON lines
(R4 nd-json.html) are stored under their own ids. Every entry is validated here, and
anything wrong is a Problem naming the line or entry, never an exception.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirserver.bulk import sources
from fhirserver.bulk.prepare import Prepared, prepare
from fhirserver.bulk.sources import chunks

PATIENT_UUID = "2c1a8f0e-7f4b-4f7e-9a36-8f6c3e1d5b10"
ENCOUNTER_UUID = "9b3e6a2d-1c4f-4e8a-8d7b-0a5f2c6e9d41"
OBSERVATION_UUID = "5e7d9c1b-3a2f-4b6e-8c0d-1f4a7e2b9c63"


def prepare_file(path: Path) -> list[Prepared]:
    return [prepare(chunk) for chunk in chunks(path)]


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def transaction_bundle() -> dict[str, Any]:
    patient = f"urn:uuid:{PATIENT_UUID}"
    encounter = f"urn:uuid:{ENCOUNTER_UUID}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {"resourceType": "Patient", "name": [{"family": "Chalmers"}]},
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
                    "subject": {"reference": patient, "display": "Peter"},
                    "encounter": {"reference": encounter},
                    "valueQuantity": {"value": 72.50, "unit": "kg"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:0d3b2c6a-8e1f-4a7d-9b5c-3e6f1a2d4c87",
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


def test_transaction_creates_become_updates_of_their_placeholder_ids(tmp_path: Path) -> None:
    path = write_json(tmp_path / "bundle.json", transaction_bundle())

    [prepared] = prepare_file(path)

    assert prepared.mode == "transaction"
    assert prepared.problems == []
    requests = [entry["request"] for entry in prepared.entries]
    assert requests[:3] == [
        {"method": "PUT", "url": f"Patient/{PATIENT_UUID}"},
        {"method": "PUT", "url": f"Encounter/{ENCOUNTER_UUID}"},
        {"method": "PUT", "url": f"Observation/{OBSERVATION_UUID}"},
    ]
    patient, encounter, observation, _ = (entry["resource"] for entry in prepared.entries)
    assert patient["id"] == PATIENT_UUID
    assert encounter["id"] == ENCOUNTER_UUID
    assert observation["id"] == OBSERVATION_UUID
    # References to the placeholders now name the ids, so each entry stands alone.
    assert encounter["subject"] == {"reference": f"Patient/{PATIENT_UUID}"}
    assert observation["subject"] == {"reference": f"Patient/{PATIENT_UUID}", "display": "Peter"}
    assert observation["encounter"] == {"reference": f"Encounter/{ENCOUNTER_UUID}"}
    assert "urn:uuid:" not in json.dumps([e["resource"] for e in prepared.entries])
    assert prepared.places == [f"{path} entry {i}" for i in range(4)]
    assert prepared.positions == [0, 1, 2, 3]
    # Index entries worked out for the single writer, one per entry.
    assert len(prepared.indexes) == 4 and all(index for index in prepared.indexes)


def test_conditional_create_stays_a_create(tmp_path: Path) -> None:
    path = write_json(tmp_path / "bundle.json", transaction_bundle())
    [prepared] = prepare_file(path)
    organization = prepared.entries[3]
    assert organization["request"] == {
        "method": "POST",
        "url": "Organization",
        "ifNoneExist": "identifier=urn:test:org|acme",
    }
    assert "id" not in organization["resource"]


def test_create_without_placeholder_stays_a_create(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "active": True},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "http://elsewhere.example/fhir/Patient/7",
                "resource": {"resourceType": "Patient", "active": False},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    [prepared] = prepare_file(write_json(tmp_path / "bundle.json", bundle))
    assert prepared.problems == []
    assert [entry["request"]["method"] for entry in prepared.entries] == ["POST", "POST"]


def test_urn_oid_placeholder_keeps_its_id(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:oid:1.2.840.113619.7",
                "resource": {"resourceType": "Organization", "name": "Acme"},
                "request": {"method": "POST", "url": "Organization"},
            },
            {
                "resource": {
                    "resourceType": "Patient",
                    "managingOrganization": {"reference": "urn:oid:1.2.840.113619.7"},
                },
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    [prepared] = prepare_file(write_json(tmp_path / "bundle.json", bundle))
    assert prepared.problems == []
    assert prepared.entries[0]["request"] == {
        "method": "PUT",
        "url": "Organization/1.2.840.113619.7",
    }
    assert prepared.entries[1]["resource"]["managingOrganization"] == {
        "reference": "Organization/1.2.840.113619.7"
    }


def test_collection_entries_are_stored_under_their_ids(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "http://example.org/fhir/Patient/pat-1",
                "resource": {"resourceType": "Patient", "id": "pat-1", "active": True},
            },
            {"resource": {"resourceType": "Patient", "active": False}},
            {
                "fullUrl": f"urn:uuid:{PATIENT_UUID}",
                "resource": {"resourceType": "Patient", "gender": "male"},
            },
        ],
    }
    path = write_json(tmp_path / "collection.json", bundle)

    [prepared] = prepare_file(path)

    # Not a transaction: the entries are written each on its own account.
    assert prepared.mode == "independent"
    assert prepared.problems == []
    assert [entry["request"] for entry in prepared.entries] == [
        {"method": "PUT", "url": "Patient/pat-1"},
        {"method": "POST", "url": "Patient"},
        {"method": "PUT", "url": f"Patient/{PATIENT_UUID}"},
    ]
    assert prepared.places == [f"{path} entry {i}" for i in range(3)]


def test_single_resource_file_is_stored_under_its_id(tmp_path: Path) -> None:
    path = write_json(tmp_path / "patient.json", {"resourceType": "Patient", "id": "solo"})
    [prepared] = prepare_file(path)
    assert prepared.problems == []
    assert [entry["request"] for entry in prepared.entries] == [
        {"method": "PUT", "url": "Patient/solo"}
    ]


def test_ndjson_lines_with_and_without_id(tmp_path: Path) -> None:
    path = tmp_path / "patients.ndjson"
    path.write_text(
        '{"resourceType": "Patient", "id": "p1", "gender": "female"}\n'
        "\n"
        '{"resourceType": "Patient", "gender": "male"}\n'
        '{"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},'
        ' "subject": {"reference": "Patient/p1"}}\n'
    )

    [prepared] = prepare_file(path)

    assert prepared.mode == "independent"
    assert prepared.problems == []
    assert [entry["request"] for entry in prepared.entries] == [
        {"method": "PUT", "url": "Patient/p1"},
        {"method": "POST", "url": "Patient"},
        {"method": "PUT", "url": "Observation/o1"},
    ]
    # The blank line counts: positions are the lines of the file.
    assert prepared.positions == [1, 3, 4]
    assert prepared.places == [f"{path} line {n}" for n in (1, 3, 4)]


def test_crlf_line_ends_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "patients.ndjson"
    path.write_bytes(
        b'{"resourceType": "Patient", "id": "p1"}\r\n{"resourceType": "Patient", "id": "p2"}\r\n'
    )
    [prepared] = prepare_file(path)
    assert prepared.problems == []
    assert [entry["request"]["url"] for entry in prepared.entries] == ["Patient/p1", "Patient/p2"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"resourceType": "Patient", "name": [{"family": "X"}', "not valid JSON"),
        ('{"resourceType": "Patient", "colour": "blue"}', "colour"),
        ('["Patient"]', "must be a JSON object"),
        ('{"resourceType": "Patient", "id": "no spaces allowed"}', "no spaces allowed"),
        ('{"id": "p3"}', "has no resourceType"),
    ],
    ids=["malformed", "unknown-element", "not-an-object", "bad-id", "no-resource-type"],
)
def test_bad_ndjson_line_is_a_problem_and_the_rest_is_kept(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "patients.ndjson"
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(1, 6)]
    lines[2] = bad_line
    path.write_text("\n".join(lines) + "\n")

    [prepared] = prepare_file(path)

    [problem] = prepared.problems
    assert problem.where == f"{path} line 3"
    assert problem.position == 3
    assert message in problem.message
    assert [entry["request"]["url"] for entry in prepared.entries] == [
        "Patient/p1",
        "Patient/p2",
        "Patient/p4",
        "Patient/p5",
    ]
    assert prepared.positions == [1, 2, 4, 5]


def test_problem_line_numbers_are_counted_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "CHUNK_LINES", 4)
    path = tmp_path / "patients.ndjson"
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(1, 12)]
    lines[9] = "{not json"
    path.write_text("\n".join(lines))  # and no newline after the last line

    prepared = prepare_file(path)

    assert len(prepared) == 3
    problems = [problem for chunk in prepared for problem in chunk.problems]
    assert [(p.where, p.position) for p in problems] == [(f"{path} line 10", 10)]
    kept = [entry["request"]["url"] for chunk in prepared for entry in chunk.entries]
    assert kept == [f"Patient/p{i}" for i in range(1, 12) if i != 10]


def test_transaction_with_one_invalid_entry_keeps_none(tmp_path: Path) -> None:
    bundle = transaction_bundle()
    bundle["entry"][2]["resource"]["valueQuantity"]["value"] = "heavy"
    path = write_json(tmp_path / "bundle.json", bundle)

    [prepared] = prepare_file(path)

    assert prepared.mode == "transaction"
    # All or nothing: nothing of it is to be written, and the problem names the entry.
    assert prepared.entries == []
    assert prepared.places == [] and prepared.positions == [] and prepared.indexes == []
    [problem] = prepared.problems
    assert problem.where == f"{path} entry 2"
    assert problem.position == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"resourceType": "Bundle", "type": "transaction", "entry": [', "not valid JSON"),
        ('{"resourceType": "Bundle", "type": "batch", "entry": {}}', "Bundle.entry"),
    ],
    ids=["malformed", "entry-not-a-list"],
)
def test_bad_bundle_file_is_a_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(content)
    [prepared] = prepare_file(path)
    assert prepared.entries == []
    [problem] = prepared.problems
    assert problem.where == str(path)
    assert message in problem.message


def test_batch_entries_fail_alone(tmp_path: Path) -> None:
    bundle = transaction_bundle()
    bundle["type"] = "batch"
    del bundle["entry"][1]["resource"]["status"]  # Encounter.status is required
    path = write_json(tmp_path / "batch.json", bundle)

    [prepared] = prepare_file(path)

    assert prepared.mode == "independent"
    [problem] = prepared.problems
    assert problem.where == f"{path} entry 1"
    assert "status" in problem.message
    assert prepared.positions == [0, 2, 3]
    assert prepared.places == [f"{path} entry {i}" for i in (0, 2, 3)]


def test_cut_at_first_problem_keeps_only_what_came_before(tmp_path: Path) -> None:
    path = tmp_path / "patients.ndjson"
    lines = [json.dumps({"resourceType": "Patient", "id": f"p{i}"}) for i in range(1, 8)]
    lines[5] = "[]"
    lines[2] = '{"resourceType": "Patient", "colour": "blue"}'
    path.write_text("\n".join(lines) + "\n")
    [prepared] = prepare_file(path)
    assert [p.position for p in prepared.problems] == [3, 6]

    prepared.cut_at_first_problem()

    assert [entry["request"]["url"] for entry in prepared.entries] == ["Patient/p1", "Patient/p2"]
    assert prepared.places == [f"{path} line 1", f"{path} line 2"]
    assert prepared.positions == [1, 2]
    assert len(prepared.indexes) == 2
    assert [(p.where, p.position) for p in prepared.problems] == [(f"{path} line 3", 3)]


def test_cut_at_first_problem_without_problems_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "patients.ndjson"
    path.write_text("".join(f'{{"resourceType": "Patient", "id": "p{i}"}}\n' for i in range(3)))
    [prepared] = prepare_file(path)
    prepared.cut_at_first_problem()
    assert len(prepared.entries) == 3 and prepared.problems == []


def test_collection_entries_without_a_resource_type_are_problems(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"id": "nameless"}},
            {"fullUrl": "urn:uuid:x"},
            {"resource": {"resourceType": "Patient", "id": "kept"}},
        ],
    }
    path = write_json(tmp_path / "collection.json", bundle)

    [prepared] = prepare_file(path)

    assert [(p.where, p.message) for p in prepared.problems] == [
        (f"{path} entry 0", "The resource has no resourceType"),
        (f"{path} entry 1", "The entry has no resource"),
    ]
    assert [entry["request"]["url"] for entry in prepared.entries] == ["Patient/kept"]
