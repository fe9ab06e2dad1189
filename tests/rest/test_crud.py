"""R4 http.html#create, #read, #vread, #update, #delete over the REST API."""

from __future__ import annotations

import httpx

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers"}], "gender": "male"}


async def test_create_read_update_delete(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=PATIENT)
    assert created.status_code == 201
    body = created.json()
    pid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")

    read = await client.get(f"/Patient/{pid}")
    assert read.status_code == 200
    assert read.json() == body

    updated = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["etag"] == 'W/"2"'

    old = await client.get(f"/Patient/{pid}/_history/1")
    assert old.json()["gender"] == "male"

    deleted = await client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    gone = await client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["resourceType"] == "OperationOutcome"
