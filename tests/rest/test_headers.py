"""Versioning headers, conditional read and Prefer (R4 http.html#versioning, #cread, #ops),
formats (http.html#mime-type) and _summary / _elements on read (search.html#summary)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:mrn", "value": "1"}],
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
    "name": [{"family": "Doe"}],
    "gender": "female",
    "photo": [{"contentType": "image/png", "data": "AAAA"}],
}


@pytest.fixture
async def patient(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.post("/Patient", json=PATIENT)).json()
    return body


async def test_etag_and_last_modified_match_meta(
    client: httpx.AsyncClient, patient: dict[str, Any]
) -> None:
    read = await client.get(f"/Patient/{patient['id']}")
    assert read.headers["etag"] == 'W/"1"'
    # Last-Modified is the lastUpdated instant at HTTP-date (second) precision.
    assert read.headers["last-modified"].endswith("GMT")
    last_updated = patient["meta"]["lastUpdated"]
    assert read.headers["last-modified"].split()[4] == last_updated[11:19]


async def test_if_none_match_gives_304_until_changed(
    client: httpx.AsyncClient, patient: dict[str, Any]
) -> None:
    url = f"/Patient/{patient['id']}"
    assert (await client.get(url, headers={"If-None-Match": 'W/"1"'})).status_code == 304
    await client.put(url, json={**patient, "gender": "male"})
    changed = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert changed.status_code == 200
    assert changed.json()["gender"] == "male"


async def test_if_modified_since(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    url = f"/Patient/{patient['id']}"
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await client.get(url, headers={"If-Modified-Since": later})).status_code == 304
    assert (await client.get(url, headers={"If-Modified-Since": earlier})).status_code == 200
    garbage = await client.get(url, headers={"If-Modified-Since": "whenever"})
    assert garbage.status_code == 200


async def test_if_match_update_and_delete(
    client: httpx.AsyncClient, patient: dict[str, Any]
) -> None:
    url = f"/Patient/{patient['id']}"
    ok = await client.put(url, json=patient, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    assert ok.headers["etag"] == 'W/"2"'
    stale = await client.delete(url, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert (await client.delete(url, headers={"If-Match": 'W/"2"'})).status_code == 204


@pytest.mark.parametrize(
    ("prefer", "expect_body"),
    [
        ("return=minimal", None),
        ("return=representation", "Patient"),
        ("return=OperationOutcome", "OperationOutcome"),
    ],
)
async def test_prefer_return(
    client: httpx.AsyncClient, prefer: str, expect_body: str | None
) -> None:
    created = await client.post("/Patient", json=PATIENT, headers={"Prefer": prefer})
    assert created.status_code == 201
    assert created.headers["location"]
    if expect_body is None:
        assert created.content == b""
    else:
        assert created.json()["resourceType"] == expect_body


async def test_update_as_create_with_client_id(client: httpx.AsyncClient) -> None:
    created = await client.put("/Patient/mine-1", json={**PATIENT, "id": "mine-1"})
    assert created.status_code == 201
    assert created.headers["location"].endswith("/Patient/mine-1/_history/1")
    again = await client.put("/Patient/mine-1", json={**PATIENT, "id": "mine-1"})
    assert again.status_code == 200
    assert again.headers["content-location"].endswith("/Patient/mine-1/_history/2")


async def test_create_ignores_client_id(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json={**PATIENT, "id": "chosen"})
    assert created.json()["id"] != "chosen"


async def test_server_assigns_meta_but_keeps_client_meta(client: httpx.AsyncClient) -> None:
    sent = {
        **PATIENT,
        "meta": {
            "versionId": "99",
            "lastUpdated": "2001-01-01T00:00:00Z",
            "tag": [{"system": "urn:t", "code": "x"}],
        },
    }
    body = (await client.post("/Patient", json=sent)).json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    assert body["meta"]["tag"] == [{"system": "urn:t", "code": "x"}]


async def test_decimal_precision_is_kept(client: httpx.AsyncClient) -> None:
    observation = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"w"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"}}'
    )
    created = await client.post("/Observation", content=observation)
    assert b'"value":72.50' in created.content
    read = await client.get(f"/Observation/{created.json()['id']}")
    assert b'"value":72.50' in read.content


@pytest.mark.parametrize(
    ("params", "accept", "content_type"),
    [
        ("", None, "application/fhir+json"),
        ("?_format=json", None, "application/fhir+json"),
        ("?_format=application/json", None, "application/json"),
        ("", "application/json", "application/json"),
        ("", "text/html,application/xhtml+xml,*/*;q=0.8", "application/fhir+json"),
    ],
)
async def test_formats(
    client: httpx.AsyncClient,
    patient: dict[str, Any],
    params: str,
    accept: str | None,
    content_type: str,
) -> None:
    headers = {"Accept": accept} if accept else {}
    read = await client.get(f"/Patient/{patient['id']}{params}", headers=headers)
    assert read.status_code == 200
    assert read.headers["content-type"] == content_type


async def test_pretty(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    pretty = await client.get(f"/Patient/{patient['id']}?_pretty=true")
    assert pretty.text.startswith('{\n  "resourceType"')
    assert pretty.json() == patient
    compact = await client.get(f"/Patient/{patient['id']}")
    assert "\n" not in compact.text


async def test_accepts_plain_json_body(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/Patient", json=PATIENT, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert created.status_code == 201


SUBSETTED = "SUBSETTED"


def _tags(resource: dict[str, Any]) -> list[str]:
    return [tag["code"] for tag in resource.get("meta", {}).get("tag", [])]


async def test_summary_true(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    summary = (await client.get(f"/Patient/{patient['id']}?_summary=true")).json()
    assert summary["name"] == patient["name"]
    assert summary["identifier"] == patient["identifier"]
    assert "photo" not in summary and "text" not in summary
    assert SUBSETTED in _tags(summary)


async def test_summary_text_and_data(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    text = (await client.get(f"/Patient/{patient['id']}?_summary=text")).json()
    assert set(text) == {"resourceType", "id", "meta", "text"}
    data = (await client.get(f"/Patient/{patient['id']}?_summary=data")).json()
    assert "text" not in data and data["photo"] == patient["photo"]
    full = (await client.get(f"/Patient/{patient['id']}?_summary=false")).json()
    assert full == patient


async def test_elements(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    subset = (await client.get(f"/Patient/{patient['id']}?_elements=gender,photo")).json()
    assert set(subset) == {"resourceType", "id", "meta", "gender", "photo"}
    assert SUBSETTED in _tags(subset)


async def test_summary_on_r4_only_type_keeps_mandatory(client: httpx.AsyncClient) -> None:
    product = {
        "resourceType": "MedicinalProduct",
        "name": [{"productName": "Aspirin"}],
        "domain": {"system": "http://hl7.org/fhir/medicinal-product-domain", "code": "human"},
    }
    created = await client.post("/MedicinalProduct", json=product)
    assert created.status_code == 201, created.text
    summary = (await client.get(f"/MedicinalProduct/{created.json()['id']}?_summary=true")).json()
    assert summary["name"] == product["name"]


async def test_if_match_star_and_lists(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    url = f"/Patient/{patient['id']}"
    assert (await client.put(url, json=patient, headers={"If-Match": "*"})).status_code == 200
    listed = await client.put(url, json=patient, headers={"If-Match": 'W/"1", W/"2"'})
    assert listed.status_code == 200
    assert listed.headers["etag"] == 'W/"3"'
    missing = await client.put(
        "/Patient/nobody", json={**patient, "id": "nobody"}, headers={"If-Match": "*"}
    )
    assert missing.status_code == 412


async def test_if_none_match_star_creates_only(client: httpx.AsyncClient) -> None:
    body = {**PATIENT, "id": "only-once"}
    first = await client.put("/Patient/only-once", json=body, headers={"If-None-Match": "*"})
    assert first.status_code == 201
    again = await client.put("/Patient/only-once", json=body, headers={"If-None-Match": "*"})
    assert again.status_code == 412


async def test_head(client: httpx.AsyncClient, patient: dict[str, Any]) -> None:
    head = await client.head(f"/Patient/{patient['id']}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == 'W/"1"'
    assert (await client.head("/metadata")).status_code == 200
    assert (await client.head("/Patient/nobody")).status_code == 404


async def test_prefer_with_spaces(client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=PATIENT, headers={"Prefer": "return = minimal"})
    assert created.status_code == 201 and created.content == b""


async def test_integers_past_64_bits_keep_their_text(client: httpx.AsyncClient) -> None:
    big = b"123456789012345678901234567890"
    observation = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
        b'"valueQuantity":{"value":' + big + b"}}"
    )
    created = await client.post("/Observation", content=observation)
    assert created.status_code == 201
    assert b'"value":' + big + b"}" in created.content
    # An integer element still refuses a number that is not a 32-bit whole number.
    patient = b'{"resourceType":"Patient","multipleBirthInteger":' + big + b"}"
    assert (await client.post("/Patient", content=patient)).status_code == 400
