"""PATCH [type]/[id] (R4 http.html#patch): a JSON Patch document, or a FHIRPath Patch
(fhirpatch.html) sent as a Parameters resource with Content-Type application/fhir+json;
and, an extension to R4 that clients such as fhirpy use, a JSON Merge Patch (RFC 7396,
application/merge-patch+json). Conditional patch, PATCH [type]?[search] (http.html#patch,
"conditional patch" as for conditional update): no match 404, one match patched, several
412."""

from __future__ import annotations

import httpx

from tests.conftest import FHIR_JSON
from tests.rest.bundle_helpers import fhirpath_replace

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


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


async def test_a_merge_patch_sets_and_removes_elements(client: httpx.AsyncClient) -> None:
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        json={"gender": "female", "birthDate": None, "name": [{"family": "Merged"}]},
        headers={"Content-Type": MERGE_PATCH},
    )
    assert answer.status_code == 200, answer.text
    stored = (await client.get(f"/Patient/{resource_id}")).json()
    assert stored["gender"] == "female"
    assert "birthDate" not in stored
    assert stored["name"] == [{"family": "Merged"}]
    assert stored["meta"]["versionId"] == "2"


async def test_a_partial_resource_as_plain_json_is_a_merge_patch(
    client: httpx.AsyncClient,
) -> None:
    """What fhirpy's patch() sends: the changed elements, Content-Type application/json."""
    resource_id = await _patient(client)
    answer = await client.patch(
        f"/Patient/{resource_id}",
        json={"gender": "male"},
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert (await client.get(f"/Patient/{resource_id}")).json()["gender"] == "male"


async def test_a_merge_patch_is_validated_like_any_write(client: httpx.AsyncClient) -> None:
    resource_id = await _patient(client)
    for body in ({"birthDate": "not-a-date"}, {"id": "other"}, {"resourceType": "Group"}):
        answer = await client.patch(
            f"/Patient/{resource_id}", json=body, headers={"Content-Type": MERGE_PATCH}
        )
        assert answer.status_code in (400, 422), body
        assert answer.json()["resourceType"] == "OperationOutcome"
    bad = await client.patch(
        f"/Patient/{resource_id}", content=b"[1, 2]", headers={"Content-Type": MERGE_PATCH}
    )
    assert bad.status_code == 400
    assert (await client.get(f"/Patient/{resource_id}")).json()["meta"]["versionId"] == "1"


async def _tagged(client: httpx.AsyncClient, family: str) -> str:
    created = await client.post(
        "/Patient", json={"resourceType": "Patient", "name": [{"family": family}]}
    )
    assert created.status_code == 201
    resource_id: str = created.json()["id"]
    return resource_id


async def test_conditional_patch_patches_the_one_match(client: httpx.AsyncClient) -> None:
    resource_id = await _tagged(client, "Onlyone")
    await _tagged(client, "Someoneelse")
    answer = await client.patch(
        "/Patient?family=Onlyone",
        content=b'[{"op": "add", "path": "/gender", "value": "other"}]',
        headers={"Content-Type": JSON_PATCH},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == resource_id
    assert (await client.get(f"/Patient/{resource_id}")).json()["gender"] == "other"


async def test_conditional_patch_with_no_match_is_404(client: httpx.AsyncClient) -> None:
    await _tagged(client, "Present")
    answer = await client.patch(
        "/Patient?family=Absent",
        json={"gender": "other"},
        headers={"Content-Type": MERGE_PATCH},
    )
    assert answer.status_code == 404
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_conditional_patch_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    first = await _tagged(client, "Twin")
    second = await _tagged(client, "Twin")
    answer = await client.patch(
        "/Patient?family=Twin",
        json=fhirpath_replace("Patient.birthDate", valueDate="1980-02-03"),
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code == 412
    for resource_id in (first, second):
        assert (await client.get(f"/Patient/{resource_id}")).json()["meta"]["versionId"] == "1"


async def test_conditional_patch_without_criteria_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.patch(
        "/Patient", json={"gender": "other"}, headers={"Content-Type": MERGE_PATCH}
    )
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_the_capability_statement_lists_the_patch_formats(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    assert set(statement["patchFormat"]) == {JSON_PATCH, FHIR_JSON, MERGE_PATCH}
