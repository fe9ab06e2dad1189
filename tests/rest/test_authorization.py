"""Scopes and launch context enforced on every interaction (SMART App Launch 2.2,
scopes-and-launch-context.html: "Clinical Scope Syntax", "Finer-grained resource
constraints using search parameters"; RFC 6750 section 3 for the 401 challenge).

The app runs with an authenticator that maps fixed test tokens to `Access` values, so
that what is tested here is the enforcement, on every backend; how real tokens become an
`Access` is tested with the authorization server and the external mode.

Data: Patients a and b; Observations of each (laboratory and vital signs for a,
laboratory for b); Conditions of each, a's asserted by Patient b; Practitioner p1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhirserver.config import Settings
from tests.backends import Backend
from tests.rest.token_apps import access, bearer, token_client

FHIR_JSON = "application/fhir+json"


TOKENS = {
    "patient-a": access("patient/*.rs", patient="a", user="Patient/a"),
    "patient-a-v1": access("patient/Observation.read patient/Patient.read", patient="a"),
    "lab-only": access("patient/Observation.rs?category=laboratory", patient="a"),
    "writer-a": access("patient/*.rs patient/Observation.cud", patient="a"),
    "system-read": access("system/*.rs"),
    "practitioner": access("user/*.cruds", user="Practitioner/p1"),
    "no-patient": access("patient/*.rs"),
    "create-only": access("patient/Observation.c", patient="a"),
}


def _lab(category: str) -> dict[str, Any]:
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    return {"coding": [{"system": system, "code": category}]}


def _observation(obs_id: str, patient: str, category: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [_lab(category)],
        "code": {"text": "test"},
        "subject": {"reference": f"Patient/{patient}"},
    }


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "a", "name": [{"family": "Ay"}]},
    {"resourceType": "Patient", "id": "b", "name": [{"family": "Bee"}]},
    {"resourceType": "Practitioner", "id": "p1", "name": [{"family": "Doc"}]},
    _observation("oa-lab", "a", "laboratory"),
    _observation("oa-vital", "a", "vital-signs"),
    _observation("ob-lab", "b", "laboratory"),
    {
        "resourceType": "Condition",
        "id": "ca",
        "subject": {"reference": "Patient/a"},
        "asserter": {"reference": "Patient/b"},
        "code": {"text": "x"},
    },
    {"resourceType": "Condition", "id": "cb", "subject": {"reference": "Patient/b"}},
]


@pytest.fixture
async def http(settings: Settings, test_backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    async with token_client(settings, test_backend.store, TOKENS, SEED) as client:
        yield client


def _ids(bundle: dict[str, Any], mode: str | None = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if "resource" in e and (mode is None or e.get("search", {}).get("mode") == mode)
    }


async def _search(http: httpx.AsyncClient, token: str, path: str) -> dict[str, Any]:
    answer = await http.get(path, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    bundle: dict[str, Any] = answer.json()
    return bundle


async def test_without_a_token_the_api_answers_401_with_a_bearer_challenge(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/Patient")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in answer.headers["www-authenticate"]
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_an_unknown_or_malformed_token_answers_401_invalid_token(
    http: httpx.AsyncClient,
) -> None:
    for header in ("Bearer nope", "Basic YTpi", "Bearer "):
        answer = await http.get("/Patient/a", headers={"Authorization": header})
        assert answer.status_code == 401, header
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]


async def test_the_capability_statement_stays_public(http: httpx.AsyncClient) -> None:
    answer = await http.get("/metadata")
    assert answer.status_code == 200
    assert answer.json()["resourceType"] == "CapabilityStatement"


async def test_a_patient_token_searches_only_its_patients_compartment(
    http: httpx.AsyncClient,
) -> None:
    assert _ids(await _search(http, "patient-a", "/Observation")) == {
        "Observation/oa-lab",
        "Observation/oa-vital",
    }
    assert _ids(await _search(http, "patient-a", "/Patient")) == {"Patient/a"}
    # Another patient's data: nothing, not an error.
    assert _ids(await _search(http, "patient-a", "/Observation?subject=Patient/b")) == set()
    assert _ids(await _search(http, "patient-a", "/Patient/b/Observation")) == set()
    total = await _search(http, "patient-a", "/Observation?_total=accurate")
    assert total["total"] == 2
    system = await _search(http, "patient-a", "?_type=Observation,Condition")
    assert _ids(system) == {"Observation/oa-lab", "Observation/oa-vital", "Condition/ca"}


async def test_v1_scopes_mean_what_their_v2_forms_mean(http: httpx.AsyncClient) -> None:
    assert _ids(await _search(http, "patient-a-v1", "/Observation")) == {
        "Observation/oa-lab",
        "Observation/oa-vital",
    }
    answer = await http.get("/Condition", headers=bearer("patient-a-v1"))
    assert answer.status_code == 403


async def test_a_granular_scope_reaches_only_what_its_parameters_match(
    http: httpx.AsyncClient,
) -> None:
    assert _ids(await _search(http, "lab-only", "/Observation")) == {"Observation/oa-lab"}
    assert (await http.get("/Observation/oa-vital", headers=bearer("lab-only"))).status_code == 404
    assert (await http.get("/Observation/oa-lab", headers=bearer("lab-only"))).status_code == 200


async def test_reads_outside_the_compartment_are_not_found(http: httpx.AsyncClient) -> None:
    assert (await http.get("/Observation/oa-lab", headers=bearer("patient-a"))).status_code == 200
    for path in ("/Observation/ob-lab", "/Patient/b", "/Observation/ob-lab/_history/1"):
        answer = await http.get(path, headers=bearer("patient-a"))
        assert answer.status_code == 404, path
    # A type outside every patient compartment is refused outright.
    assert (await http.get("/Practitioner/p1", headers=bearer("patient-a"))).status_code == 403
    assert (await http.get("/Practitioner", headers=bearer("patient-a"))).status_code == 403


async def test_a_patient_scope_without_a_patient_in_context_reaches_nothing(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/Observation", headers=bearer("no-patient"))).status_code == 403


async def test_includes_bring_in_only_what_the_token_may_see(http: httpx.AsyncClient) -> None:
    bundle = await _search(http, "patient-a", "/Condition?_include=Condition:asserter")
    assert _ids(bundle) == {"Condition/ca"}
    assert _ids(bundle, "include") == set()  # Patient b asserted it: not a's to see
    admin = await _search(http, "admin", "/Condition?_id=ca&_include=Condition:asserter")
    assert _ids(admin, "include") == {"Patient/b"}
    reverse = await _search(http, "patient-a", "/Patient?_revinclude=Observation:subject")
    assert _ids(reverse) == {"Patient/a"}
    assert _ids(reverse, "include") == {"Observation/oa-lab", "Observation/oa-vital"}
    lab = await _search(http, "lab-only", "/Observation?_include=Observation:subject")
    assert _ids(lab, "include") == set()  # lab-only has no Patient scope


async def test_chains_and_has_see_only_what_the_token_may_search(
    http: httpx.AsyncClient,
) -> None:
    chained = await _search(http, "system-read", "/Observation?subject:Patient.family=Bee")
    assert _ids(chained) == {"Observation/ob-lab"}
    assert _ids(await _search(http, "patient-a", "/Observation?subject.family=Bee")) == set()
    has = "/Patient?_has:Observation:subject:category=vital-signs"
    assert _ids(await _search(http, "patient-a", has)) == {"Patient/a"}
    # lab-only may not search vital signs, so it may not learn of them through _has.
    answer = await http.get(
        "/Observation?_has:Condition:subject:code:text=x", headers=bearer("lab-only")
    )
    assert answer.status_code == 403


async def test_history_shows_only_versions_the_token_may_see(http: httpx.AsyncClient) -> None:
    type_history = await _search(http, "patient-a", "/Observation/_history")
    assert _ids(type_history, None) == {"Observation/oa-lab", "Observation/oa-vital"}
    assert "total" not in type_history
    system = await _search(http, "patient-a", "/_history")
    assert _ids(system, None) == {
        "Patient/a",
        "Observation/oa-lab",
        "Observation/oa-vital",
        "Condition/ca",
    }
    own = await _search(http, "patient-a", "/Observation/oa-lab/_history")
    assert _ids(own, None) == {"Observation/oa-lab"}
    answer = await http.get("/Observation/ob-lab/_history", headers=bearer("patient-a"))
    assert answer.status_code == 404


async def test_a_patient_write_stays_inside_the_compartment(http: httpx.AsyncClient) -> None:
    ours = _observation("new", "a", "laboratory")
    created = await http.post("/Observation", json=ours, headers=bearer("writer-a"))
    assert created.status_code == 201, created.text
    theirs = _observation("new", "b", "laboratory")
    refused = await http.post("/Observation", json=theirs, headers=bearer("writer-a"))
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"
    # Taking b's Observation over (update to subject a) needs b's side allowed too.
    moved = _observation("ob-lab", "a", "laboratory")
    answer = await http.put("/Observation/ob-lab", json=moved, headers=bearer("writer-a"))
    assert answer.status_code == 403
    answer = await http.delete("/Observation/ob-lab", headers=bearer("writer-a"))
    assert answer.status_code == 404  # not a's to see, so not there for a
    # Scopes without write on the type refuse the interaction.
    condition = {"resourceType": "Condition", "subject": {"reference": "Patient/a"}}
    answer = await http.post("/Condition", json=condition, headers=bearer("writer-a"))
    assert answer.status_code == 403
    answer = await http.post(
        "/Patient", json={"resourceType": "Patient"}, headers=bearer("system-read")
    )
    assert answer.status_code == 403
    stored = await _search(http, "admin", "/Observation?subject=Patient/b")
    assert _ids(stored) == {"Observation/ob-lab"}


async def test_a_conditional_write_matches_only_inside_the_token_reach(
    http: httpx.AsyncClient,
) -> None:
    # ob-lab (b's) matches the criteria, but writer-a may not see it: no match, so a
    # create, in a's compartment.
    body = _observation("x", "a", "laboratory")
    answer = await http.post(
        "/Observation",
        json=body,
        headers={**bearer("writer-a"), "If-None-Exist": "_id=ob-lab"},
    )
    assert answer.status_code == 201


async def test_a_transaction_is_refused_whole_when_one_entry_is_not_allowed(
    http: httpx.AsyncClient,
) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation("t1", "a", "laboratory"),
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": _observation("t2", "b", "laboratory"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = await http.post("", json=bundle, headers=bearer("writer-a"))
    assert answer.status_code == 403
    stored = await _search(http, "admin", "/Observation?_total=accurate")
    assert stored["total"] == 3


async def test_a_batch_checks_each_entry(http: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation/oa-lab"}},
            {"request": {"method": "GET", "url": "Observation/ob-lab"}},
            {"request": {"method": "GET", "url": "Observation"}},
            {
                "resource": _observation("b2", "b", "laboratory"),
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    answer = await http.post("", json=bundle, headers=bearer("writer-a"))
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    statuses = [entry["response"]["status"][:3] for entry in entries]
    assert statuses == ["200", "404", "200", "403"]
    found = entries[2]["resource"]
    assert _ids(found) == {"Observation/oa-lab", "Observation/oa-vital"}


async def test_system_and_practitioner_scopes_reach_every_patient(
    http: httpx.AsyncClient,
) -> None:
    everyone = {"Observation/oa-lab", "Observation/oa-vital", "Observation/ob-lab"}
    assert _ids(await _search(http, "system-read", "/Observation")) == everyone
    assert _ids(await _search(http, "practitioner", "/Observation")) == everyone
    created = await http.post(
        "/Observation", json=_observation("p", "b", "laboratory"), headers=bearer("practitioner")
    )
    assert created.status_code == 201


async def test_a_refused_access_is_recorded_as_an_audit_event(http: httpx.AsyncClient) -> None:
    await http.get("/Practitioner/p1", headers=bearer("patient-a"))
    await http.get("/Patient", headers=bearer("not-a-token"))
    events = await _search(http, "admin", "/AuditEvent?outcome=4")
    recorded = [entry["resource"] for entry in events["entry"]]
    assert len(recorded) == 2
    forbidden = next(e for e in recorded if e["subtype"][0]["code"] == "read")
    assert forbidden["agent"][1]["who"]["reference"] == "Patient/a"
    assert forbidden["entity"][0]["what"]["display"] == "/fhir/Practitioner/p1"
    assert "not-a-token" not in str(recorded)


# --- What a write must not reveal (found in review; each failed before its fix) -------


async def test_a_patch_of_another_patients_resource_reveals_nothing(
    http: httpx.AsyncClient,
) -> None:
    probe = [{"op": "test", "path": "/status", "value": "final"}]
    for path in ("/Observation/ob-lab", "/Observation/nope"):
        answer = await http.patch(
            path,
            content=json.dumps(probe),
            headers={**bearer("writer-a"), "Content-Type": "application/json-patch+json"},
        )
        assert answer.status_code == 404, (path, answer.text)
        assert "final" not in answer.text


async def test_a_patient_write_may_not_name_another_patient(http: httpx.AsyncClient) -> None:
    planted = {**_observation("x", "a", "laboratory"), "performer": [{"reference": "Patient/b"}]}
    answer = await http.post("/Observation", json=planted, headers=bearer("writer-a"))
    assert answer.status_code == 403
    assert _ids(await _search(http, "admin", "/Patient/b/Observation")) == {"Observation/ob-lab"}


async def test_a_conditional_create_does_not_show_a_match_the_token_may_not_read(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post(
        "/Observation",
        json=_observation("x", "a", "laboratory"),
        headers={
            **bearer("create-only"),
            "If-None-Exist": "subject=Patient/a&category=laboratory",
            "Prefer": "return=representation",
        },
    )
    assert answer.status_code == 403
    assert "oa-lab" not in answer.text


async def test_writes_do_not_tell_whether_an_invisible_resource_exists(
    http: httpx.AsyncClient,
) -> None:
    moved = _observation("ob-lab", "a", "laboratory")
    stale = {**bearer("writer-a"), "If-Match": 'W/"99"'}
    answer = await http.put("/Observation/ob-lab", json=moved, headers=stale)
    assert answer.status_code == 403
    assert "version" not in answer.json()["issue"][0]["diagnostics"]
    deleted = [
        await http.delete(path, headers=stale)
        for path in ("/Observation/ob-lab", "/Observation/nope")
    ]
    assert [d.status_code for d in deleted] == [404, 404]
    assert deleted[0].json() == deleted[1].json() | {
        "issue": [
            {
                **deleted[1].json()["issue"][0],
                "diagnostics": deleted[0].json()["issue"][0]["diagnostics"],
            }
        ]
    }


async def test_another_patients_deleted_resource_looks_unknown(http: httpx.AsyncClient) -> None:
    assert (await http.delete("/Observation/ob-lab", headers=bearer("admin"))).status_code == 204
    gone = await http.get("/Observation/ob-lab", headers=bearer("patient-a"))
    assert gone.status_code == 404
    versions = [
        await http.get(path, headers=bearer("patient-a"))
        for path in ("/Observation/ob-lab/_history/1", "/Observation/nope/_history/1")
    ]
    assert [v.status_code for v in versions] == [404, 404]
    texts = [v.json()["issue"][0]["diagnostics"] for v in versions]
    assert texts[0].replace("ob-lab", "X") == texts[1].replace("nope", "X")


async def test_garbage_tokens_cannot_fill_the_store_with_audit_events(
    http: httpx.AsyncClient,
) -> None:
    for attempt in range(40):
        await http.get("/Patient", headers=bearer(f"junk{attempt}"))
    events = await _search(http, "admin", "/AuditEvent?outcome=4&_total=accurate")
    assert 1 <= events["total"] <= 20
