"""R4 invariants on the write path (conformance-rules.html#constraints, http.html#create,
#update, #patch, #transaction): a resource breaking an invariant of severity error is
refused with 422 and an OperationOutcome naming the constraint and the element, and
nothing is stored; a warning (dom-6) refuses nothing."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx

from fhirserver.resources import codec
from fhirserver.resources.validate import validate
from tests.resources.test_invariants import mutate

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "r4" / "examples"
CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
ABSENT_AND_VALUE = {
    "resourceType": "Observation",
    "status": "final",
    "code": CODE,
    "valueString": "x",
    "dataAbsentReason": CODE,
}
BAD_CONTACT = {"resourceType": "Patient", "contact": [{"gender": "male"}]}


def issue(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    found: dict[str, Any] = body["issue"][0]
    return found


async def test_create_breaking_an_invariant_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/Observation", json=ABSENT_AND_VALUE)
    assert response.status_code == 422
    refused = issue(response)
    assert refused["code"] == "invariant" and refused["expression"] == ["Observation"]
    assert "obs-6" in refused["diagnostics"]
    assert (
        "dataAbsentReason SHALL only be present if Observation.value[x] is not present"
        in (refused["diagnostics"])
    )
    search = await client.get("/Observation", params={"_summary": "count"})
    assert search.json()["total"] == 0


async def test_update_breaking_an_invariant_is_422(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
    pid = created.json()["id"]
    response = await client.put(f"/Patient/{pid}", json={**BAD_CONTACT, "id": pid})
    assert response.status_code == 422
    assert issue(response)["expression"] == ["Patient.contact[0]"]
    assert "pat-1" in issue(response)["diagnostics"]
    current = await client.get(f"/Patient/{pid}")
    assert current.json()["meta"]["versionId"] == "1"


async def test_patch_breaking_an_invariant_is_422(client: httpx.AsyncClient) -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "period": {"start": "2020-01-01", "end": "2020-01-02"},
    }
    eid = (await client.post("/Encounter", json=encounter)).json()["id"]
    response = await client.patch(
        f"/Encounter/{eid}",
        json=[{"op": "replace", "path": "/period/start", "value": "2020-02-01"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 422
    assert issue(response)["expression"] == ["Encounter.period"]
    assert "per-1" in issue(response)["diagnostics"]


async def test_a_transaction_with_one_broken_entry_stores_nothing(
    client: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": "female"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": ABSENT_AND_VALUE, "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = await client.post("", json=bundle)
    assert response.status_code == 422
    assert "obs-6" in str(response.json())
    search = await client.get("/Patient", params={"_summary": "count"})
    assert search.json()["total"] == 0


async def test_a_warning_refuses_nothing(client: httpx.AsyncClient) -> None:
    # No narrative: dom-6 is a best-practice warning in R4.
    response = await client.post("/Patient", json={"resourceType": "Patient", "active": True})
    assert response.status_code == 201


async def test_mutated_examples_never_give_a_500_nor_store_what_is_invalid(
    client: httpx.AsyncClient,
) -> None:
    rng = random.Random(25)
    names = sorted(EXAMPLES.glob("*.json"))
    for _ in range(40):
        resource = codec.loads(rng.choice(names).read_bytes())
        for _ in range(rng.randint(1, 3)):
            resource = mutate(resource, rng)
        kind = resource.get("resourceType")
        response = await client.post(f"/{kind}", content=codec.dumps(resource))
        assert response.status_code < 500, response.text
        if response.status_code == 201:
            stored = codec.loads(response.content)
            assert validate(stored) == kind
