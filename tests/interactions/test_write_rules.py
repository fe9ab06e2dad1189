"""Write rules (interactions/rules.py): a rule runs inside the unit of work of every
create, update, patch and delete of its type, from REST and from transaction Bundles;
its refusal writes nothing, its amendment is what gets stored, its jobs commit with
the write."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fhirserver.errors import Unprocessable
from fhirserver.interactions import rules
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Job, UnitOfWork

seen: list[tuple[Any, Any]] = []


async def patient_rule(
    unit: UnitOfWork, current: JSONObject | None, new: JSONObject | None
) -> JSONObject | None:
    seen.append((current and current.get("gender"), new and new.get("gender")))
    if new is None:
        return None
    if current is not None and current.get("gender") != new.get("gender"):
        raise Unprocessable("gender may not change", expression="Patient.gender")
    await unit.put_job(Job("audit", str(new.get("id")), datetime(2025, 1, 1, tzinfo=UTC)))
    return {**new, "active": True}


@pytest.fixture(autouse=True)
def installed(client: httpx.AsyncClient) -> Iterator[None]:
    """After the app is made: the app installs its own rules."""
    seen.clear()
    rules.install({"Patient": patient_rule})
    yield
    rules.install({})


async def test_a_rule_amends_refuses_and_sees_deletes(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
    assert created.status_code == 201 and created.json()["active"] is True
    pid = created.json()["id"]
    changed = {"resourceType": "Patient", "id": pid, "gender": "female"}
    refused = await client.put(f"/Patient/{pid}", json=changed)
    assert refused.status_code == 422, refused.text
    assert (await client.get(f"/Patient/{pid}")).json()["meta"]["versionId"] == "1"
    patched = await client.patch(
        f"/Patient/{pid}",
        json=[{"op": "replace", "path": "/gender", "value": "other"}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 422
    assert (await client.delete(f"/Patient/{pid}")).status_code == 204
    assert seen == [(None, "male"), ("male", "female"), ("male", "other"), ("male", None)]


async def test_a_rule_runs_for_bundle_entries_and_its_refusal_rolls_back(
    client: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "id": "p1", "gender": "male"},
                "request": {"method": "PUT", "url": "Patient/p1"},
            }
        ],
    }
    assert (await client.post("", json=bundle)).status_code == 200
    assert (await client.get("/Patient/p1")).json()["active"] is True
    bundle["entry"] = [
        {
            "resource": {"resourceType": "Patient", "id": "p2"},
            "request": {"method": "PUT", "url": "Patient/p2"},
        },
        {
            "resource": {"resourceType": "Patient", "id": "p1", "gender": "female"},
            "request": {"method": "PUT", "url": "Patient/p1"},
        },
    ]
    refused = await client.post("", json=bundle)
    assert refused.status_code == 422, refused.text
    assert (await client.get("/Patient/p2")).status_code == 404
