"""PATCH [type]/[id] (R4 http.html#patch): a JSON Patch document, or a FHIRPath Patch
(fhirpatch.html) sent as a Parameters resource with Content-Type application/fhir+json."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON
from tests.rest.bundle_helpers import fhirpath_replace

JSON_PATCH = "application/json-patch+json"


async def _patient(client: httpx.AsyncClient) -> str:
    created = await client.post(
        "/Patient", json={"resourceType": "Patient", "birthDate": "1970-01-01"}
    )
    assert created.status_code == 201
    resource_id: str = created.json()["id"]
    return resource_id


async def test_fhirpath_patch_replaces_an_element(client: httpx.AsyncClient) -> None:
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        json=fhirpath_replace("Patient.birthDate", valueDate="1980-02-03"),
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code == 200
    assert answer.json()["birthDate"] == "1980-02-03"
    assert answer.json()["meta"]["versionId"] == "2"
    stored = (await client.get(f"/Patient/{resource_id}")).json()
    assert stored["birthDate"] == "1980-02-03"


async def test_json_patch_still_works(client: httpx.AsyncClient) -> None:
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        content=b'[{"op": "replace", "path": "/birthDate", "value": "1990-01-01"}]',
        headers={"Content-Type": JSON_PATCH},
    )
    assert answer.status_code == 200
    assert answer.json()["birthDate"] == "1990-01-01"


async def test_a_fhir_json_patch_must_be_parameters(client: httpx.AsyncClient) -> None:
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        json={"resourceType": "Patient", "birthDate": "1990-01-01"},
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/Patient/{resource_id}")).json()["meta"]["versionId"] == "1"


async def test_a_fhirpath_patch_leaving_an_invalid_resource_is_unprocessable(
    client: httpx.AsyncClient,
) -> None:
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        json=fhirpath_replace("Patient.birthDate", valueDate="not-a-date"),
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code in (400, 422)
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert (await client.get(f"/Patient/{resource_id}")).json()["birthDate"] == "1970-01-01"
