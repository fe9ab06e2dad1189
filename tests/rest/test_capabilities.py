"""GET [base]/metadata (R4 http.html#capabilities, capabilitystatement.html): a valid R4
CapabilityStatement that advertises exactly the interactions that work."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirserver.resources.definitions import resource_types
from fhirserver.resources.validate import validate

SAMPLES = {
    "Patient": {"resourceType": "Patient", "identifier": [{"system": "s", "value": "v"}]},
    "MedicinalProduct": {"resourceType": "MedicinalProduct", "name": [{"productName": "x"}]},
}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
async def statement(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    body: dict[str, Any] = response.json()
    return body


def test_is_a_valid_r4_capability_statement(statement: dict[str, Any]) -> None:
    assert validate(statement, "CapabilityStatement") == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert "application/fhir+json" in statement["format"]
    assert statement["patchFormat"] == [
        "application/json-patch+json",
        "application/fhir+json",
        "application/merge-patch+json",
    ]
    rest = statement["rest"][0]
    assert [r["type"] for r in rest["resource"]] == list(resource_types())
    assert {i["code"] for i in rest["interaction"]} == {
        "transaction",
        "batch",
        "history-system",
        "search-system",
    }
    assert statement["implementation"]["url"] == "http://testserver/fhir"


@pytest.mark.parametrize("resource_type", sorted(SAMPLES))
async def test_every_advertised_interaction_works(
    client: httpx.AsyncClient, statement: dict[str, Any], resource_type: str
) -> None:
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == resource_type)
    assert entry["versioning"] == "versioned-update" and entry["readHistory"] is True
    advertised = {i["code"] for i in entry["interaction"]}
    sample = SAMPLES[resource_type]
    url = f"/{resource_type}"
    statuses: dict[str, int] = {}

    created = await client.post(url, json=sample)
    statuses["create"] = created.status_code
    rid = created.json()["id"]
    statuses["read"] = (await client.get(f"{url}/{rid}")).status_code
    statuses["vread"] = (await client.get(f"{url}/{rid}/_history/1")).status_code
    statuses["update"] = (await client.put(f"{url}/{rid}", json={**sample, "id": rid})).status_code
    patch = [{"op": "add", "path": "/language", "value": "en"}]
    statuses["patch"] = (
        await client.patch(f"{url}/{rid}", json=patch, headers=JSON_PATCH)
    ).status_code
    statuses["history-instance"] = (await client.get(f"{url}/{rid}/_history")).status_code
    statuses["history-type"] = (await client.get(f"{url}/_history")).status_code
    statuses["delete"] = (await client.delete(f"{url}/{rid}")).status_code
    statuses["search-type"] = (await client.get(url, params={"_id": rid})).status_code
    assert set(statuses) == advertised
    assert all(status < 300 for status in statuses.values()), statuses

    if entry["conditionalCreate"] and "identifier" in str(sample):
        again = await client.post(url, json=sample, headers={"If-None-Exist": "identifier=s|v"})
        assert again.status_code in (200, 201)
    if entry["conditionalUpdate"]:
        assert (
            await client.put(f"{url}?_id=cond-1", json={**sample, "id": "cond-1"})
        ).status_code == 201
    if entry["conditionalDelete"] == "single":
        assert (await client.delete(f"{url}?_id=cond-1")).status_code == 204


async def test_every_advertised_search_parameter_answers(
    client: httpx.AsyncClient, statement: dict[str, Any]
) -> None:
    """Each searchParam of every type, asked with :missing and sorted on, gives a searchset."""
    failures = []
    for entry in statement["rest"][0]["resource"]:
        assert {"search-type"} <= {i["code"] for i in entry["interaction"]}
        for param in entry["searchParam"]:
            name = param["name"]
            query = {name: "2020"} if name == "_lastUpdated" else {f"{name}:missing": "false"}
            if name == "_id":
                query = {"_id": "x"}
            if param["type"] not in ("composite", "special"):
                query["_sort"] = f"-{name}"
            answer = await client.get(f"/{entry['type']}", params=query)
            if answer.status_code != 200 or answer.json()["type"] != "searchset":
                failures.append((entry["type"], name, answer.status_code))
    assert failures == []


def test_includes_are_advertised(statement: dict[str, Any]) -> None:
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    assert "Observation:subject" in observation["searchInclude"]
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "Observation:subject" in patient["searchRevInclude"]
    assert {p["name"] for p in patient["searchParam"]} >= {"name", "birthdate", "_id"}


@pytest.mark.parametrize("kind", ["transaction", "batch"])
async def test_advertised_bundle_interactions_work(client: httpx.AsyncClient, kind: str) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"resource": SAMPLES["Patient"], "request": {"method": "POST", "url": "Patient"}}
        ],
    }
    answer = await client.post("", json=bundle)
    assert answer.status_code == 200
    assert answer.json()["type"] == f"{kind}-response"
    assert answer.json()["entry"][0]["response"]["status"] == "201 Created"
