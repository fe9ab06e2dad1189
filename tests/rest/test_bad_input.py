"""Bad input (R4 http.html#summary status codes, operationoutcome.html): each refusal has
the right status, an OperationOutcome naming the problem, and leaves the store unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

PATIENT = {"resourceType": "Patient", "name": [{"family": "Doe"}], "birthDate": "1970-01-01"}


@pytest.fixture
async def patient(client: httpx.AsyncClient) -> dict[str, Any]:
    created = await client.post("/Patient", json=PATIENT)
    assert created.status_code == 201
    # A second version, so history and If-Match have something to compare with.
    updated = await client.put(f"/Patient/{created.json()['id']}", json=created.json())
    body: dict[str, Any] = updated.json()
    return body


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested_extensions(depth: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://x", "valueString": "leaf"}
    for _ in range(depth):
        extension = {"url": "http://x", "extension": [extension]}
    return {**PATIENT, "extension": [extension]}


CASES: list[tuple[str, str, str, Any, dict[str, str], int, str | None]] = [
    # id, method, path ({id} = the patient's id), body, headers, status, expression
    ("malformed json", "POST", "/Patient", b'{"resourceType": "Patient",', {}, 400, None),
    ("json array", "POST", "/Patient", b"[]", {}, 400, None),
    ("not utf-8", "POST", "/Patient", b'{"resourceType":"Patient","id":"\xff"}', {}, 400, None),
    (
        "NaN",
        "POST",
        "/Patient",
        b'{"resourceType":"Observation","valueDecimal":NaN}',
        {},
        400,
        None,
    ),
    (
        "wrong content type",
        "POST",
        "/Patient",
        _json(PATIENT),
        {"Content-Type": "application/xml"},
        415,
        None,
    ),
    (
        "form content type",
        "PUT",
        "/Patient/{id}",
        _json(PATIENT),
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        None,
    ),
    (
        "wrong resourceType",
        "POST",
        "/Patient",
        _json({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        {},
        400,
        "resourceType",
    ),
    (
        "unknown resourceType in body",
        "POST",
        "/Patient",
        _json({"resourceType": "Pateint"}),
        {},
        400,
        "resourceType",
    ),
    (
        "url/body id mismatch",
        "PUT",
        "/Patient/{id}",
        _json({**PATIENT, "id": "someone-else"}),
        {},
        400,
        "id",
    ),
    ("update without id", "PUT", "/Patient/{id}", _json(PATIENT), {}, 400, "id"),
    (
        "stale If-Match",
        "PUT",
        "/Patient/{id}",
        "{patient}",
        {"If-Match": 'W/"1"'},
        412,
        None,
    ),
    ("stale If-Match on delete", "DELETE", "/Patient/{id}", None, {"If-Match": 'W/"1"'}, 412, None),
    ("garbled If-Match", "PUT", "/Patient/{id}", "{patient}", {"If-Match": "yesterday"}, 400, None),
    ("unknown type", "POST", "/Pateint", _json(PATIENT), {}, 404, None),
    ("unknown type read", "GET", "/Pateint/1", None, {}, 404, None),
    (
        "unknown element",
        "POST",
        "/Patient",
        _json({**PATIENT, "favouriteColour": "blue"}),
        {},
        400,
        "Patient.favouriteColour",
    ),
    (
        "bad primitive",
        "POST",
        "/Patient",
        _json({**PATIENT, "birthDate": "01/02/1970"}),
        {},
        400,
        "Patient.birthDate",
    ),
    (
        "wrong type",
        "POST",
        "/Patient",
        _json({**PATIENT, "active": "yes"}),
        {},
        400,
        "Patient.active",
    ),
    (
        "nested wrong type",
        "POST",
        "/Patient",
        _json({**PATIENT, "name": [{"family": ["Doe"]}]}),
        {},
        400,
        "Patient.name[0].family",
    ),
    (
        "missing required element",
        "POST",
        "/Observation",
        _json({"resourceType": "Observation", "status": "final"}),
        {},
        422,
        "Observation.code",
    ),
    (
        "R4-only type with unknown element",
        "POST",
        "/MedicinalProduct",
        _json({"resourceType": "MedicinalProduct", "name": [{"productName": "x"}], "bogus": 1}),
        {},
        400,
        None,
    ),
    (
        "oversized body",
        "POST",
        "/Patient",
        _json({**PATIENT, "text": {"status": "generated", "div": "x" * 70_000}}),
        {},
        413,
        None,
    ),
    (
        "patch makes invalid resource",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "replace", "path": "/birthDate", "value": "not a date"}]),
        {"Content-Type": "application/json-patch+json"},
        422,
        "Patient.birthDate",
    ),
    (
        "patch adds unknown element",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "add", "path": "/colour", "value": "blue"}]),
        {"Content-Type": "application/json-patch+json"},
        422,
        "Patient.colour",
    ),
    (
        "patch changes id",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "replace", "path": "/id", "value": "other"}]),
        {"Content-Type": "application/json-patch+json"},
        422,
        None,
    ),
    (
        "patch test fails",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "test", "path": "/gender", "value": "male"}]),
        {"Content-Type": "application/json-patch+json"},
        422,
        None,
    ),
    (
        "patch document not a list",
        "PATCH",
        "/Patient/{id}",
        _json({"op": "remove", "path": "/name"}),
        {"Content-Type": "application/json-patch+json"},
        400,
        None,
    ),
    (
        # application/fhir+json announces a FHIRPath Patch, which is a Parameters resource.
        "JSON Patch array sent as a FHIRPath Patch",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "remove", "path": "/name"}]),
        {},
        400,
        None,
    ),
    (
        "patch with an unknown content type",
        "PATCH",
        "/Patient/{id}",
        b'[{"op": "remove", "path": "/name"}]',
        {"Content-Type": "text/plain"},
        415,
        None,
    ),
    (
        "invalid id in URL",
        "PUT",
        "/Patient/bad_id!",
        _json({**PATIENT, "id": "bad_id!"}),
        {},
        400,
        None,
    ),
    ("wrong method on instance", "POST", "/Patient/{id}", _json(PATIENT), {}, 405, None),
    ("wrong method on metadata", "DELETE", "/metadata", None, {}, 405, None),
    ("path outside base", "GET", "/../nothing", None, {}, 404, None),
    ("xml asked for", "GET", "/Patient/{id}", None, {"Accept": "application/fhir+xml"}, 406, None),
    ("_format xml", "GET", "/Patient/{id}?_format=xml", None, {}, 406, None),
    ("_summary=count on read", "GET", "/Patient/{id}?_summary=count", None, {}, 400, None),
    (
        "conditional create on unsupported parameter",
        "POST",
        "/Patient",
        _json(PATIENT),
        {"If-None-Exist": "nonsense=Doe"},
        400,
        "nonsense",
    ),
    (
        "conditional update with malformed date",
        "PUT",
        "/Patient?_lastUpdated=gt2020-13-45",
        _json(PATIENT),
        {},
        400,
        None,
    ),
    (
        "conditional delete with unknown prefix",
        "DELETE",
        "/Patient?_lastUpdated=zz2020",
        None,
        {},
        400,
        None,
    ),
    ("conditional delete without criteria", "DELETE", "/Patient", None, {}, 400, None),
    ("history with bad _count", "GET", "/Patient/_history?_count=many", None, {}, 400, None),
    ("history with superscript _count", "GET", "/_history?_count=%C2%B2", None, {}, 400, None),
    ("history with huge _count", "GET", "/_history?_count=" + "9" * 5000, None, {}, 400, None),
    ("history with huge cursor", "GET", "/_history?_cursor=" + "9" * 30, None, {}, 400, None),
    ("vread of a superscript version", "GET", "/Patient/{id}/_history/%C2%B2", None, {}, 404, None),
    ("vread of a huge version", "GET", "/Patient/{id}/_history/" + "9" * 30, None, {}, 404, None),
    (
        "huge If-Match",
        "PUT",
        "/Patient/{id}",
        "{patient}",
        {"If-Match": 'W/"' + "9" * 5000 + '"'},
        400,
        None,
    ),
    (
        "time zone out of range",
        "DELETE",
        "/Patient?_lastUpdated=2020-01-01T00:00-99:99",
        None,
        {},
        400,
        None,
    ),
    (
        "time zone past +14:00",
        "DELETE",
        "/Patient?_lastUpdated=2020-01-01T00:00%2B20:00",
        None,
        {},
        400,
        None,
    ),
    (
        "too many criteria",
        "DELETE",
        "/Patient?_id=" + ",".join(f"a{i}" for i in range(1200)),
        None,
        {},
        400,
        None,
    ),
    (
        "too many repeats",
        "DELETE",
        "/Patient?" + "&".join(["_lastUpdated=gt2000"] * 1200),
        None,
        {},
        400,
        None,
    ),
    ("id with a trailing newline", "DELETE", "/Patient/abc%0A", None, {}, 400, None),
    (
        "stale If-Match on conditional delete",
        "DELETE",
        "/Patient?_id={id}",
        None,
        {"If-Match": 'W/"1"'},
        412,
        None,
    ),
    (
        "If-None-Match * on update of an existing resource",
        "PUT",
        "/Patient/{id}",
        "{patient}",
        {"If-None-Match": "*"},
        412,
        None,
    ),
    (
        "deeply nested JSON",
        "POST",
        "/Patient",
        b'{"resourceType":"Patient","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        {},
        400,
        None,
    ),
    (
        "deeply nested patch",
        "PATCH",
        "/Patient/{id}",
        b"[" * 5000 + b"]" * 5000,
        {"Content-Type": "application/json-patch+json"},
        400,
        None,
    ),
    (
        "deeply nested extensions",
        "POST",
        "/Patient",
        _json(_nested_extensions(150)),
        {},
        400,
        None,
    ),
    (
        "empty object",
        "POST",
        "/Patient",
        _json({**PATIENT, "name": [{}]}),
        {},
        400,
        "Patient.name[0]",
    ),
    ("empty array", "POST", "/Patient", _json({**PATIENT, "name": []}), {}, 400, "Patient.name"),
    (
        "null element",
        "POST",
        "/Patient",
        _json({**PATIENT, "gender": None}),
        {},
        400,
        "Patient.gender",
    ),
    (
        "null in an array without its _element",
        "POST",
        "/Patient",
        _json({**PATIENT, "name": [{"given": [None]}]}),
        {},
        400,
        "Patient.name[0].given[0]",
    ),
    (
        "fhir_comments",
        "POST",
        "/Patient",
        _json({**PATIENT, "fhir_comments": ["hi"]}),
        {},
        400,
        "Patient.fhir_comments",
    ),
    (
        "R4B-only element",
        "POST",
        "/ActivityDefinition",
        _json(
            {
                "resourceType": "ActivityDefinition",
                "status": "draft",
                "subjectCanonical": "http://x",
            }
        ),
        {},
        400,
        "ActivityDefinition.subjectCanonical",
    ),
    (
        "contained R4B-only type",
        "POST",
        "/Patient",
        _json(
            {**PATIENT, "contained": [{"resourceType": "Citation", "id": "c", "status": "active"}]}
        ),
        {},
        400,
        "Patient.contained[0]",
    ),
    (
        "contained without resourceType",
        "POST",
        "/Patient",
        _json({**PATIENT, "contained": [{"id": "c"}]}),
        {},
        400,
        "Patient.contained[0]",
    ),
    (
        "patch leaves an empty object",
        "PATCH",
        "/Patient/{id}",
        _json([{"op": "remove", "path": "/name/0/family"}]),
        {"Content-Type": "application/json-patch+json"},
        422,
        "Patient.name[0]",
    ),
    (
        "fhirVersion 3.0 asked for",
        "GET",
        "/Patient/{id}",
        None,
        {"Accept": "application/fhir+json; fhirVersion=3.0"},
        406,
        None,
    ),
    (
        "fhirVersion 3.0 sent",
        "POST",
        "/Patient",
        _json(PATIENT),
        {"Content-Type": "application/fhir+json; fhirVersion=3.0"},
        415,
        None,
    ),
    ("history with bad _since", "GET", "/_history?_since=last-week", None, {}, 400, None),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "expression"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_refused_and_store_unchanged(
    client: httpx.AsyncClient,
    patient: dict[str, Any],
    dump: Callable[[], Any],
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    status: int,
    expression: str | None,
) -> None:
    if body == "{patient}":
        body = _json(patient)
    before = dump()
    response = await client.request(
        method, path.replace("{id}", patient["id"]), content=body, headers=headers
    )
    if status == 405:
        assert response.headers["allow"]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] and all(issue["diagnostics"] for issue in outcome["issue"])
    assert "Traceback" not in response.text
    if expression is not None:
        expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
        assert any(expression in e for e in expressions), expressions
    assert dump() == before
