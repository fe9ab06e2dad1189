"""Observation/$lastn (R4 observation-operation-lastn.html, OperationDefinition
Observation-lastn): the most recent `max` Observations (default 1) per code for a
subject, with the other Observation search parameters as filters; codes sharing a
coding (system and code) are one group, transitively; text-only codes group by text;
ties at the cut are all returned; a request without a subject (`patient` / `subject`)
or without `category` / a code parameter is refused."""

from __future__ import annotations

from typing import Any

import httpx

LOINC = "http://loinc.org"
VITALS = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs",
        }
    ]
}


def _observation(
    patient: str, codes: list[str] | str, when: str, category: bool = True
) -> dict[str, Any]:
    code: dict[str, Any] = (
        {"text": codes}
        if isinstance(codes, str)
        else {"coding": [{"system": LOINC, "code": c} for c in codes]}
    )
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": code,
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
    }
    if category:
        observation["category"] = [VITALS]
    return observation


async def _seed(client: httpx.AsyncClient, *observations: dict[str, Any]) -> list[str]:
    ids = []
    for observation in observations:
        created = await client.post("/Observation", json=observation)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return ids


async def _lastn(client: httpx.AsyncClient, params: dict[str, str]) -> list[str]:
    answer = await client.get("/Observation/$lastn", params=params)
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


async def test_the_newest_per_code_by_default(client: httpx.AsyncClient) -> None:
    _, new_hr, _, new_bp, _ = await _seed(
        client,
        _observation("p1", ["8867-4"], "2024-01-01"),
        _observation("p1", ["8867-4"], "2024-03-01"),
        _observation("p1", ["85354-9"], "2024-02-01"),
        _observation("p1", ["85354-9"], "2024-02-15"),
        _observation("p2", ["8867-4"], "2025-01-01"),
    )
    found = await _lastn(client, {"patient": "p1", "category": "vital-signs"})
    assert sorted(found) == sorted([new_hr, new_bp])
    # Newest first.
    assert found == [new_hr, new_bp]


async def test_max_per_group_newest_first(client: httpx.AsyncClient) -> None:
    ids = await _seed(
        client, *(_observation("p1", ["8867-4"], f"2024-01-0{day}") for day in range(1, 6))
    )
    found = await _lastn(client, {"patient": "p1", "code": f"{LOINC}|8867-4", "max": "3"})
    assert found == [ids[4], ids[3], ids[2]]


async def test_ties_at_the_cut_are_all_returned(client: httpx.AsyncClient) -> None:
    older, tie_a, tie_b = await _seed(
        client,
        _observation("p1", ["8867-4"], "2024-01-01"),
        _observation("p1", ["8867-4"], "2024-02-01T10:00:00Z"),
        _observation("p1", ["8867-4"], "2024-02-01T10:00:00Z"),
    )
    found = await _lastn(client, {"patient": "p1", "category": "vital-signs"})
    assert sorted(found) == sorted([tie_a, tie_b])
    assert older not in found


async def test_codes_sharing_a_coding_are_one_group(client: httpx.AsyncClient) -> None:
    # The spec's table: a | b | a,b is one group [a, b]; text-only codes group by text.
    # The oldest joins a and b, so only the newest of the three is returned.
    a, _, _, text_m, text_lower = await _seed(
        client,
        _observation("p1", ["a"], "2024-01-03"),
        _observation("p1", ["b"], "2024-01-02"),
        _observation("p1", ["a", "b"], "2024-01-01"),
        _observation("p1", "Text", "2024-01-04"),
        _observation("p1", "text", "2024-01-05"),
    )
    found = await _lastn(client, {"patient": "p1", "category": "vital-signs"})
    assert sorted(found) == sorted([a, text_m, text_lower])


async def test_other_parameters_filter(client: httpx.AsyncClient) -> None:
    early, late = await _seed(
        client,
        _observation("p1", ["8867-4"], "2023-06-01"),
        _observation("p1", ["8867-4"], "2024-06-01"),
    )
    found = await _lastn(
        client, {"subject": "Patient/p1", "category": "vital-signs", "date": "lt2024"}
    )
    assert found == [early]
    assert late not in found


async def test_no_match_is_an_empty_searchset(client: httpx.AsyncClient) -> None:
    assert await _lastn(client, {"patient": "nobody", "category": "vital-signs"}) == []


async def test_subject_and_code_or_category_are_required(client: httpx.AsyncClient) -> None:
    for params in (
        {"category": "vital-signs"},
        {"patient": "p1"},
        {"patient": "p1", "category": "vital-signs", "max": "0"},
        {"patient": "p1", "category": "vital-signs", "max": "two"},
    ):
        answer = await client.get("/Observation/$lastn", params=params)
        assert answer.status_code == 400, params
        assert answer.json()["resourceType"] == "OperationOutcome"


async def test_post_with_a_parameters_body(client: httpx.AsyncClient) -> None:
    ids = await _seed(
        client, *(_observation("p1", ["8867-4"], f"2024-01-0{day}") for day in range(1, 4))
    )
    answer = await client.post(
        "/Observation/$lastn?patient=p1&category=vital-signs",
        json={"resourceType": "Parameters", "parameter": [{"name": "max", "valuePositiveInt": 2}]},
    )
    assert answer.status_code == 200, answer.text
    assert [e["resource"]["id"] for e in answer.json()["entry"]] == [ids[2], ids[1]]


async def test_the_capability_statement_lists_lastn(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    assert {
        "name": "lastn",
        "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
    } in observation["operation"]
