"""Required bindings on every write path (R4 terminologies.html#binding; http.html#create,
#update, #patch, #transaction): a value outside the bound ValueSet is refused with 422 and
an OperationOutcome naming the element and the ValueSet, and nothing is stored."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.rest.bundle_helpers import entry, patient

Dump = Callable[[], list[tuple[Any, ...]]]
GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"


def _assert_bad_gender(answer: httpx.Response, expression: str) -> None:
    assert answer.status_code == 422, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = [i for i in outcome["issue"] if GENDER_VS in i.get("diagnostics", "")]
    assert issue["severity"] == "error" and issue["code"] == "code-invalid"
    assert issue["expression"] == [expression]
    assert "dragon" in issue["diagnostics"]


async def test_create_with_a_code_outside_the_valueset_is_refused(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    before = dump()
    answer = await client.post("/Patient", json=patient("D1", gender="dragon"))
    _assert_bad_gender(answer, "Patient.gender")
    assert dump() == before
    assert (await client.post("/Patient", json=patient("D1", gender="female"))).status_code == 201


async def test_update_with_a_code_outside_the_valueset_is_refused(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    assert (await client.put("/Patient/p1", json=patient("P1", id="p1"))).status_code == 201
    before = dump()
    answer = await client.put("/Patient/p1", json=patient("P1", id="p1", gender="dragon"))
    _assert_bad_gender(answer, "Patient.gender")
    assert dump() == before


async def test_a_json_patch_that_breaks_a_binding_is_refused(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    assert (await client.put("/Patient/p2", json=patient("P2", id="p2"))).status_code == 201
    before = dump()
    answer = await client.patch(
        "/Patient/p2",
        content=json.dumps([{"op": "add", "path": "/contact", "value": [{"gender": "dragon"}]}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    _assert_bad_gender(answer, "Patient.contact[0].gender")
    assert dump() == before
    read = (await client.get("/Patient/p2")).json()
    assert read["meta"]["versionId"] == "1" and "contact" not in read


async def test_a_transaction_with_one_bad_code_commits_nothing(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    before = dump()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry("POST", "Patient", patient("T1", gender="male")),
            entry("POST", "Patient", patient("T2", gender="dragon")),
        ],
    }
    answer = await client.post("", json=bundle)
    assert answer.status_code == 422, answer.text
    issues = answer.json()["issue"]
    assert any(GENDER_VS in i.get("diagnostics", "") for i in issues), issues
    assert any(
        "Bundle.entry[1]" in " ".join([i.get("diagnostics", ""), *i.get("expression", [])])
        for i in issues
    ), issues
    assert dump() == before


async def test_a_data_type_binding_inside_a_resource_is_enforced(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.post(
        "/Patient", json=patient("C1", telecom=[{"system": "carrier-pigeon", "value": "x"}])
    )
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert issue["expression"] == ["Patient.telecom[0].system"]
    assert "http://hl7.org/fhir/ValueSet/contact-point-system" in issue["diagnostics"]


async def test_a_merge_patch_that_breaks_a_binding_is_refused(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    assert (await client.put("/Patient/p3", json=patient("P3", id="p3"))).status_code == 201
    before = dump()
    answer = await client.patch(
        "/Patient/p3",
        content=json.dumps({"gender": "dragon"}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    _assert_bad_gender(answer, "Patient.gender")
    assert dump() == before
