"""`GET|POST Patient/[id]/$everything` and `Patient/$everything` over HTTP (R4
patient-operations.html#everything, operations.html#executing; SMART App Launch 2.2
scopes-and-launch-context.html for what a token sees), on every backend.

The app runs with a test authenticator mapping fixed tokens to `Access` values, as in
test_authorization.py. Data: Patients a and b; a's Encounter with Practitioner p1 at
Organization org1 and a's Observations (laboratory and vital signs); b's Observation by
Practitioner p2.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fhirserver.config import Settings
from tests.backends import Backend
from tests.rest.token_apps import access, bearer, token_client

FHIR_JSON = "application/fhir+json"
SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-2019"
EVERYTHING_URL = "http://fhirserver.dev/fhir/OperationDefinition/Patient-everything"
SYNTHEA_PATIENT = "Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json"


TOKENS = {
    "patient-a": access("patient/*.rs", patient="a", user="Patient/a"),
    "lab-only": access("patient/Observation.rs?category=laboratory", patient="a"),
    "practitioner": access("user/*.rs", user="Practitioner/p1"),
    "observations": access("system/Observation.rs system/Patient.rs"),
}


def _observation(obs_id: str, patient: str, category: str, **more: Any) -> dict[str, Any]:
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [{"coding": [{"system": system, "code": category}]}],
        "code": {"text": "test"},
        "subject": {"reference": f"Patient/{patient}"},
        **more,
    }


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "a"},
    {"resourceType": "Patient", "id": "b"},
    {"resourceType": "Practitioner", "id": "p1"},
    {"resourceType": "Practitioner", "id": "p2"},
    # org-1 (R4): an Organization has a name or an identifier.
    {"resourceType": "Organization", "id": "org1", "name": "Org One"},
    {
        "resourceType": "Encounter",
        "id": "ea",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/a"},
        "participant": [{"individual": {"reference": "Practitioner/p1"}}],
        "serviceProvider": {"reference": "Organization/org1"},
    },
    _observation("oa-lab", "a", "laboratory", encounter={"reference": "Encounter/ea"}),
    _observation("oa-vital", "a", "vital-signs"),
    _observation("ob-lab", "b", "laboratory", performer=[{"reference": "Practitioner/p2"}]),
]
A_RECORD = {"Patient/a", "Encounter/ea", "Observation/oa-lab", "Observation/oa-vital"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Room for a Synthea patient's transaction Bundle.
    return Settings(
        store=str(tmp_path / "fhir.sqlite"), max_body_bytes=2 * 1024 * 1024, run_jobs=False
    )


@pytest.fixture
async def http(settings: Settings, test_backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with token_client(settings, test_backend.store, TOKENS, SEED) as client:
        yield client


def _ids(bundle: dict[str, Any], mode: str) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    }


async def _get(http: httpx.AsyncClient, token: str, path: str) -> dict[str, Any]:
    answer = await http.get(path, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    bundle: dict[str, Any] = answer.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def _next(bundle: dict[str, Any]) -> str | None:
    for link in bundle["link"]:
        if link["relation"] == "next":
            parts = urlsplit(link["url"])
            return f"{parts.path.removeprefix('/fhir')}?{parts.query}"
    return None


async def test_get_answers_the_record_as_a_searchset(http: httpx.AsyncClient) -> None:
    bundle = await _get(http, "admin", "/Patient/a/$everything")
    assert _ids(bundle, "match") == A_RECORD
    assert _ids(bundle, "include") == {"Practitioner/p1", "Organization/org1"}
    assert "Observation/ob-lab" not in _ids(bundle, "match")
    assert bundle["link"][0] == {
        "relation": "self",
        "url": "http://testserver/fhir/Patient/a/$everything",
    }
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert "http://testserver/fhir/Encounter/ea" in full_urls


async def test_post_takes_its_inputs_as_parameters(http: httpx.AsyncClient) -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueCode": "Observation,Practitioner"},
            {"name": "_count", "valueInteger": 50},
        ],
    }
    answer = await http.post("/Patient/a/$everything", json=parameters, headers=bearer("admin"))
    assert answer.status_code == 200, answer.text
    bundle = answer.json()
    assert _ids(bundle, "match") == {"Observation/oa-lab", "Observation/oa-vital"}
    assert _ids(bundle, "include") == {"Practitioner/p1"}
    empty = await http.post("/Patient/a/$everything", headers=bearer("admin"))
    assert _ids(empty.json(), "match") == A_RECORD
    wrong = {"resourceType": "Parameters", "parameter": [{"name": "start", "valueDate": "2020"}]}
    refused = await http.post("/Patient/a/$everything", json=wrong, headers=bearer("admin"))
    assert refused.status_code == 400
    assert refused.json()["resourceType"] == "OperationOutcome"


async def test_since_and_type_in_the_query(http: httpx.AsyncClient) -> None:
    bundle = await _get(http, "admin", "/Patient/a/$everything?_type=Encounter,Organization")
    assert _ids(bundle, "match") == {"Encounter/ea"}
    assert _ids(bundle, "include") == {"Organization/org1"}
    future = await _get(http, "admin", "/Patient/a/$everything?_since=2999-01-01T00:00:00Z")
    assert "entry" not in future
    past = await _get(http, "admin", "/Patient/a/$everything?_since=2000-01-01T00:00:00Z")
    assert _ids(past, "match") == A_RECORD
    for bad in ("_since=soon", "_type=Nothing", "start=2020-01-01", "_count=x"):
        answer = await http.get(f"/Patient/a/$everything?{bad}", headers=bearer("admin"))
        assert answer.status_code == 400, bad


async def test_unknown_patient_is_404(http: httpx.AsyncClient) -> None:
    answer = await http.get("/Patient/nobody/$everything", headers=bearer("admin"))
    assert answer.status_code == 404
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_every_patient_at_type_level(http: httpx.AsyncClient) -> None:
    bundle = await _get(http, "admin", "/Patient/$everything")
    assert _ids(bundle, "match") == {*A_RECORD, "Patient/b", "Observation/ob-lab"}
    assert _ids(bundle, "include") == {"Practitioner/p1", "Practitioner/p2", "Organization/org1"}
    assert len(bundle["entry"]) == 9


async def test_paging_follows_next_links(http: httpx.AsyncClient) -> None:
    seen: list[str] = []
    path: str | None = "/Patient/$everything?_count=2"
    while path is not None:
        bundle = await _get(http, "admin", path)
        assert len(bundle.get("entry", [])) <= 2
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]]
        path = _next(bundle)
        assert path is None or "_count=2" in path
    assert len(seen) == len(set(seen)) == 9


async def test_other_operations_and_methods_still_answer_as_before(
    http: httpx.AsyncClient,
) -> None:
    # $everything is defined on Patient only; telehealth's operations stay POST-only.
    assert (await http.get("/Encounter/ea/$everything", headers=bearer("admin"))).status_code == 405
    assert (await http.get("/Patient/$nothing", headers=bearer("admin"))).status_code == 404
    answer = await http.get("/Encounter/ea/$end-virtual-visit", headers=bearer("admin"))
    assert answer.status_code == 405
    put = await http.put("/Patient/a/$everything", json={}, headers=bearer("admin"))
    assert put.status_code == 405


# -- authorization ------------------------------------------------------------------------


async def test_a_patient_token_gets_only_its_own_record(http: httpx.AsyncClient) -> None:
    bundle = await _get(http, "patient-a", "/Patient/a/$everything")
    assert _ids(bundle, "match") == A_RECORD
    # Practitioner and Organization lie outside every patient compartment: a patient
    # scope does not reach them (auth/policy.py), so they are left out.
    assert _ids(bundle, "include") == set()
    other = await http.get("/Patient/b/$everything", headers=bearer("patient-a"))
    assert other.status_code == 404
    everyone = await _get(http, "patient-a", "/Patient/$everything")
    assert _ids(everyone, "match") == A_RECORD


async def test_a_granular_scope_narrows_the_record(http: httpx.AsyncClient) -> None:
    # No Patient scope: the patient cannot be read, so neither can its record (403 as
    # a read of it would be).
    answer = await http.get("/Patient/a/$everything", headers=bearer("lab-only"))
    assert answer.status_code == 403
    bundle = await _get(http, "lab-only", "/Patient/$everything")
    assert _ids(bundle, "match") == {"Observation/oa-lab"}


async def test_scopes_limit_the_types(http: httpx.AsyncClient) -> None:
    bundle = await _get(http, "observations", "/Patient/a/$everything")
    assert _ids(bundle, "match") == {"Patient/a", "Observation/oa-lab", "Observation/oa-vital"}
    assert _ids(bundle, "include") == set()
    practitioner = await _get(http, "practitioner", "/Patient/b/$everything")
    assert _ids(practitioner, "match") == {"Patient/b", "Observation/ob-lab"}
    assert _ids(practitioner, "include") == {"Practitioner/p2"}


async def test_a_token_is_needed(http: httpx.AsyncClient) -> None:
    assert (await http.get("/Patient/a/$everything")).status_code == 401


async def test_paging_a_synthea_record_over_http(http: httpx.AsyncClient) -> None:
    """The whole Synthea record, page by page, each resource exactly once, while an
    Observation is added between pages (it is not in the snapshot)."""
    bundle = (SYNTHEA / SYNTHEA_PATIENT).read_bytes()
    loaded = await http.post("/", content=bundle, headers=bearer("admin"))
    assert loaded.status_code == 200, loaded.text[:500]
    locations = [e["response"]["location"] for e in loaded.json()["entry"]]
    (patient,) = [loc.split("/")[1] for loc in locations if loc.startswith("Patient/")]
    expected = {"/".join(loc.split("/")[:2]) for loc in locations}
    assert len(expected) == 66

    seen: list[str] = []
    path: str | None = f"/Patient/{patient}/$everything?_count=10"
    while path is not None:
        page = await _get(http, "admin", path)
        seen += [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in page["entry"]]
        if len(seen) == 10:
            late = _observation("late", patient, "laboratory")
            assert (
                await http.put("/Observation/late", json=late, headers=bearer("admin"))
            ).is_success
        path = _next(page)
    assert len(seen) == len(set(seen)) == 66
    assert set(seen) == expected


async def test_the_capability_statement_declares_everything(http: httpx.AsyncClient) -> None:
    statement = (await http.get("/metadata")).json()
    (patient,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    assert {"name": "everything", "definition": EVERYTHING_URL} in patient["operation"]


async def test_a_bundle_entry_cannot_run_it(http: httpx.AsyncClient) -> None:
    """Operations run outside Bundles (transaction_entries): as one entry of a batch,
    `$everything` at either level answers that entry with a 400."""
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/a/$everything"}},
            {"request": {"method": "GET", "url": "Patient/$everything"}},
        ],
    }
    answer = await http.post("/", json=batch, headers=bearer("admin"))
    assert answer.status_code == 200, answer.text
    assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == ["400", "400"]
