"""Write rules (interactions/rules.py): a rule runs inside the unit of work of every
create, update, patch and delete of its type, from REST and from transaction Bundles;
its refusal writes nothing, its amendment is what gets stored, its jobs commit with
the write. Rules belong to one app: nothing is registered globally."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.errors import Unprocessable
from fhirserver.interactions.rules import Actor, Change
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Job, Store
from fhirserver.storage.sqlite import SqliteStore
from tests.backends import Backend


async def patient_rule(change: Change, seen: list[tuple[Any, Any]]) -> JSONObject | None:
    current, new = change.current, change.new
    seen.append((current and current.get("gender"), new and new.get("gender")))
    assert change.actor is Actor.CLIENT
    if new is None:
        return None
    if current is not None and current.get("gender") != new.get("gender"):
        raise Unprocessable("gender may not change", expression="Patient.gender")
    job = Job("audit", str(new.get("id")), datetime(2025, 1, 1, tzinfo=UTC))
    await change.unit.put_job(job)
    return {**new, "active": True}


@asynccontextmanager
async def serving(
    settings: Settings, store: Store, seen: list[tuple[Any, Any]] | None
) -> AsyncIterator[httpx.AsyncClient]:
    """An app on `store`; with `seen`, one whose writes of Patients run `patient_rule`."""
    app = create_app(settings, store=store)
    if seen is not None:

        async def rule(change: Change) -> JSONObject | None:
            return await patient_rule(change, seen)

        app.state.writes = replace(app.state.writes, rules={"Patient": rule})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": "application/fhir+json"},
        ) as http:
            yield http


@pytest.fixture
def seen() -> list[tuple[Any, Any]]:
    return []


@pytest.fixture
async def client(
    settings: Settings, test_backend: Backend, seen: list[tuple[Any, Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings, test_backend.store, seen) as http:
        yield http


async def test_a_rule_amends_refuses_and_sees_deletes(
    client: httpx.AsyncClient, seen: list[tuple[Any, Any]]
) -> None:
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


async def test_two_apps_in_one_process_keep_their_own_rules(
    settings: Settings, tmp_path: Any, seen: list[tuple[Any, Any]]
) -> None:
    ruled_store = SqliteStore(str(tmp_path / "ruled.sqlite"))
    plain_store = SqliteStore(str(tmp_path / "plain.sqlite"))
    patient = {"resourceType": "Patient", "gender": "male"}
    async with (
        serving(settings, ruled_store, seen) as ruled,
        serving(settings, plain_store, None) as plain,
    ):
        # The plain app was made after the ruled one and is used first: neither changes
        # what the other runs.
        unruled = await plain.post("/Patient", json=patient)
        assert unruled.status_code == 201 and "active" not in unruled.json()
        amended = await ruled.post("/Patient", json=patient)
        assert amended.status_code == 201 and amended.json()["active"] is True
        again = await plain.post("/Patient", json=patient)
        assert "active" not in again.json()
    assert seen == [(None, "male")]
