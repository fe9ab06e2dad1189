"""`$validate` (R4 resource-operation-validate.html, OperationDefinition Resource-validate):
POST [type]/$validate and [type]/[id]/$validate with a resource or a Parameters
(`resource`, `mode`, `profile`); always 200 with an OperationOutcome (errors, warnings,
information, "All OK" when valid), nothing stored; 400 only for a request that cannot
run. Profiles (R4 validation.html#profile, profiling.html): US Core 3.1.0 loaded into
the store; FHIRSERVER_VALIDATE_PROFILES enforces claimed profiles on write (422)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.interactions.ig_load import load_package
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.validate_op import DEFINITION
from fhirserver.profiles.package import read_package
from tests.backends import Backend
from tests.conftest import FHIR_JSON, SHARED_DATA

US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
PATIENT_PROFILE = f"{US_CORE}/us-core-patient"
CONFORMANT: dict[str, Any] = {
    "resourceType": "Patient",
    "meta": {"profile": [PATIENT_PROFILE]},
    "identifier": [{"system": "urn:oid:1.2.3", "value": "42"}],
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
    "gender": "male",
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "fhir.sqlite"), run_jobs=False)


async def _load_us_core(test_backend: Backend) -> None:
    package = read_package(SHARED_DATA / "ig" / "hl7.fhir.us.core-3.1.0.tgz")
    store = test_backend.store
    await load_package(store, WriteContext().as_server(), package)


def _issues(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return list(body["issue"])


def _errors(response: httpx.Response) -> dict[str, str]:
    return {
        i.get("expression", [""])[0]: i["diagnostics"]
        for i in _issues(response)
        if i["severity"] == "error"
    }


async def _count(client: httpx.AsyncClient, resource_type: str) -> int:
    answer = await client.get(f"/{resource_type}", params={"_summary": "count"})
    return int(answer.json()["total"])


async def test_a_valid_resource_is_all_ok_and_nothing_is_stored(client: httpx.AsyncClient) -> None:
    (issue,) = _issues(await client.post("/Patient/$validate", json={"resourceType": "Patient"}))
    assert issue["severity"] == "information" and issue["diagnostics"] == "All OK"
    assert await _count(client, "Patient") == 0


async def test_an_invalid_resource_is_200_with_the_errors(client: httpx.AsyncClient) -> None:
    bad = {"resourceType": "Patient", "birthDate": "yesterday"}
    errors = _errors(await client.post("/Patient/$validate", json=bad))
    assert "Patient.birthDate" in errors
    wrong_type = _errors(await client.post("/Patient/$validate", json={"resourceType": "Group"}))
    assert "resourceType" in wrong_type
    assert await _count(client, "Patient") == 0


async def test_bindings_refuse_or_warn_by_strength(client: httpx.AsyncClient) -> None:
    """terminologies.html#binding: outside a required binding is an error, outside an
    extensible one (Patient.maritalStatus) a warning."""
    dragon = {"resourceType": "Patient", "gender": "dragon"}
    assert "Patient.gender" in _errors(await client.post("/Patient/$validate", json=dragon))
    odd = {"coding": [{"system": "urn:example", "code": "x"}]}
    issues = _issues(
        await client.post(
            "/Patient/$validate", json={"resourceType": "Patient", "maritalStatus": odd}
        )
    )
    warnings = [i for i in issues if i["severity"] == "warning"]
    assert [w["expression"] for w in warnings] == [["Patient.maritalStatus"]]
    assert not [i for i in issues if i["severity"] == "error"]


async def test_parameters_with_mode_create(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient", "gender": "male"}},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    (issue,) = _issues(await client.post("/Patient/$validate", json=body))
    assert issue["diagnostics"] == "All OK"


@pytest.mark.parametrize(
    ("path", "body", "query"),
    [
        # An unknown mode.
        ("/Patient/$validate", {"resourceType": "Patient"}, {"mode": "sideways"}),
        # No resource for create (nor with no mode).
        ("/Patient/$validate", None, {"mode": "create"}),
        ("/Patient/$validate", {"resourceType": "Parameters", "parameter": []}, {}),
        # update and delete name a resource: instance level only.
        ("/Patient/$validate", {"resourceType": "Patient"}, {"mode": "update"}),
        ("/Patient/$validate", None, {"mode": "delete"}),
        # An input the operation does not take.
        (
            "/Patient/$validate",
            {"resourceType": "Parameters", "parameter": [{"name": "x", "valueCode": "y"}]},
            {},
        ),
    ],
)
async def test_a_request_that_cannot_run_is_400(
    client: httpx.AsyncClient, path: str, body: dict[str, Any] | None, query: dict[str, str]
) -> None:
    response = (
        await client.post(path, json=body, params=query)
        if body
        else await client.post(path, params=query)
    )
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_mode_update_checks_the_id_and_that_the_resource_exists(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    same = {"resourceType": "Patient", "id": created["id"], "gender": "female"}
    ok = _issues(await client.post(f"/Patient/{created['id']}/$validate?mode=update", json=same))
    assert [i["diagnostics"] for i in ok] == ["All OK"]
    other = _errors(
        await client.post(
            f"/Patient/{created['id']}/$validate?mode=update", json={**same, "id": "x"}
        )
    )
    assert "Patient.id" in other
    missing = _errors(
        await client.post("/Patient/nope/$validate?mode=update", json={**same, "id": "nope"})
    )
    assert "Patient" in missing
    # Nothing changed.
    assert (await client.get(f"/Patient/{created['id']}")).json()["meta"]["versionId"] == "1"


async def test_mode_delete_checks_the_resource_exists(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json={"resourceType": "Patient"})).json()
    (ok,) = _issues(await client.post(f"/Patient/{created['id']}/$validate?mode=delete"))
    assert ok["diagnostics"] == "All OK"
    assert "Patient" in _errors(await client.post("/Patient/nope/$validate?mode=delete"))
    assert (await client.get(f"/Patient/{created['id']}")).status_code == 200


async def test_an_unknown_profile_asked_for_is_an_error_a_claimed_one_a_warning(
    client: httpx.AsyncClient,
) -> None:
    asked = await client.post(
        "/Patient/$validate", params={"profile": "http://x/p"}, json={"resourceType": "Patient"}
    )
    assert "not known" in next(iter(_errors(asked).values()))
    claimed = {"resourceType": "Patient", "meta": {"profile": ["http://x/p"]}}
    (issue,) = _issues(await client.post("/Patient/$validate", json=claimed))
    assert issue["severity"] == "warning"


async def test_us_core_patient_profile(client: httpx.AsyncClient, test_backend: Backend) -> None:
    await _load_us_core(test_backend)
    ok = _issues(await client.post("/Patient/$validate", json=CONFORMANT))
    assert not [i for i in ok if i["severity"] == "error"]
    bare = {"resourceType": "Patient"}
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": bare},
            {"name": "profile", "valueCanonical": PATIENT_PROFILE},
        ],
    }
    errors = _errors(await client.post("/Patient/$validate", json=body))
    assert {"Patient.identifier", "Patient.name", "Patient.gender"} <= set(errors)


async def test_us_core_encounter_and_vital_signs(
    client: httpx.AsyncClient, test_backend: Backend
) -> None:
    await _load_us_core(test_backend)
    profile = f"{US_CORE}/us-core-pulse-oximetry"
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "2708-6"},
                {"system": "http://loinc.org", "code": "59408-5"},
            ]
        },
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2020-01-02",
        "valueQuantity": {
            "value": 97,
            "unit": "%",
            "system": "http://unitsofmeasure.org",
            "code": "%",
        },
    }
    answer = await client.post(
        "/Observation/$validate", params={"profile": profile}, json=observation
    )
    assert _errors(answer) == {}
    no_category = {**observation, "category": []}
    del no_category["category"]
    answer = await client.post(
        "/Observation/$validate", params={"profile": profile}, json=no_category
    )
    assert "Observation.category" in _errors(answer)
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    answer = await client.post(
        "/Encounter/$validate", params={"profile": f"{US_CORE}/us-core-encounter"}, json=encounter
    )
    assert {"Encounter.type", "Encounter.subject"} <= set(_errors(answer))


async def test_a_profile_posted_to_the_server_is_used(client: httpx.AsyncClient) -> None:
    package = read_package(SHARED_DATA / "ig" / "hl7.fhir.us.core-3.1.0.tgz")
    definition = next(r for r in package.resources if r["url"] == PATIENT_PROFILE)
    assert (await client.post("/StructureDefinition", json=definition)).status_code == 201
    errors = _errors(
        await client.post(
            "/Patient/$validate",
            params={"profile": PATIENT_PROFILE},
            json={"resourceType": "Patient"},
        )
    )
    assert "Patient.gender" in errors
    # Only a differential: refused clearly, in the outcome.
    differential = copy.deepcopy(definition)
    differential.pop("snapshot")
    differential["url"] = "http://example.org/StructureDefinition/differential-only"
    assert (await client.post("/StructureDefinition", json=differential)).status_code == 201
    errors = _errors(
        await client.post(
            "/Patient/$validate",
            params={"profile": differential["url"]},
            json={"resourceType": "Patient"},
        )
    )
    assert "no snapshot" in next(iter(errors.values()))


@pytest.fixture
async def enforcing(settings: Settings, test_backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.with_overrides(validate_profiles=True), store=test_backend.store)
    async with app.router.lifespan_context(app):
        await _load_us_core(test_backend)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as http:
            yield http


async def test_claimed_profiles_are_enforced_on_write_when_configured(
    enforcing: httpx.AsyncClient,
) -> None:
    assert (await enforcing.post("/Patient", json=CONFORMANT)).status_code == 201
    bare = {"resourceType": "Patient", "meta": {"profile": [PATIENT_PROFILE]}}
    refused = await enforcing.post("/Patient", json=bare)
    assert refused.status_code == 422
    expressions = {i["expression"][0] for i in refused.json()["issue"]}
    assert {"Patient.identifier", "Patient.name", "Patient.gender"} <= expressions
    # In a transaction too: nothing of it commits.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": CONFORMANT, "request": {"method": "POST", "url": "Patient"}},
            {"resource": bare, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    assert (await enforcing.post("", json=bundle)).status_code == 422
    assert await _count(enforcing, "Patient") == 1
    # A profile the server does not hold is not enforced.
    other = {"resourceType": "Patient", "meta": {"profile": ["http://x/p"]}}
    assert (await enforcing.post("/Patient", json=other)).status_code == 201


async def test_claimed_profiles_are_not_enforced_by_default(
    client: httpx.AsyncClient, test_backend: Backend
) -> None:
    await _load_us_core(test_backend)
    bare = {"resourceType": "Patient", "meta": {"profile": [PATIENT_PROFILE]}}
    assert (await client.post("/Patient", json=bare)).status_code == 201


async def test_the_capability_statement_lists_validate_on_every_type(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    for entry in statement["rest"][0]["resource"]:
        assert {"name": "validate", "definition": DEFINITION} in entry["operation"], entry["type"]
