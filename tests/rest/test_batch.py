"""Batch Bundles over HTTP: POST [base] with Bundle.type = batch (R4 http.html#transaction),
under the batch processing rules (http.html#brules: entries are independent, each succeeds
or fails on its own, the answer is 200 regardless) and answered with a batch-response
(http.html#transaction-response: one entry per request entry, in request order, with
response.outcome on failures).
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.rest.bundle_helpers import SYS, entry, patient

ORG_SYS = "http://example.org/org-ids"


async def batch(client: httpx.AsyncClient, *entries: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.post(
        "", json={"resourceType": "Bundle", "type": "batch", "entry": list(entries)}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "batch-response"
    items: list[dict[str, Any]] = body["entry"]
    assert len(items) == len(entries)
    return items


def organization(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORG_SYS, "value": value}],
        **extra,
    }


def code(item: dict[str, Any]) -> int:
    return int(item["response"]["status"].split()[0])


def location_id(item: dict[str, Any]) -> str:
    """The id in a response entry's location, `[base/]Type/id/_history/n`."""
    parts = item["response"]["location"].split("/")
    assert parts[-2] == "_history", item["response"]["location"]
    return parts[-3]


def assert_failed(item: dict[str, Any], status: int) -> None:
    """A failed batch entry: its status, an OperationOutcome saying why, no resource."""
    assert code(item) == status, item
    outcome = item["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] and outcome["issue"][0]["severity"] in ("error", "fatal")
    assert "resource" not in item
    assert "location" not in item["response"]


async def search_ids(client: httpx.AsyncClient, resource_type: str, **params: str) -> list[str]:
    answer = await client.get(f"/{resource_type}", params=params)
    assert answer.status_code == 200, answer.text
    return [e["resource"]["id"] for e in answer.json().get("entry", [])]


async def test_mixed_successes_and_failures(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/b-pre", json=patient("B-PRE", id="b-pre"))
    await client.put("/Patient/b-pre", json=patient("B-PRE", id="b-pre", gender="male"))
    await client.put("/Organization/b-org", json=organization("b-org", id="b-org"))
    before = (await client.get("/Patient/b-pre")).json()

    items = await batch(
        client,
        entry("POST", "Patient", patient("B-NEW")),
        entry("POST", "Patient", patient("B-BAD", favouriteColour="blue")),
        entry("GET", "Patient/b-missing"),
        entry(
            "PUT", "Patient/b-pre", patient("B-PRE", id="b-pre", gender="female"), ifMatch='W/"1"'
        ),
        entry(
            "POST",
            "Organization",
            organization("b-org"),
            ifNoneExist=f"identifier={ORG_SYS}|b-org",
        ),
        entry("GET", "Patient/b-pre"),
    )
    created, invalid, missing, stale, matched, read = items

    # A valid create: stored, answered with where it went.
    assert code(created) == 201
    new_id = location_id(created)
    assert created["response"]["etag"] == 'W/"1"'
    assert (await client.get(f"/Patient/{new_id}")).json()["identifier"][0]["value"] == "B-NEW"

    # Failures: each its own status and OperationOutcome, nothing stored.
    assert_failed(invalid, 400)
    assert await search_ids(client, "Patient", identifier=f"{SYS}|B-BAD") == []
    assert_failed(missing, 404)
    assert_failed(stale, 412)
    assert (await client.get("/Patient/b-pre")).json() == before

    # A conditional create that matched: 200 and the existing resource, nothing made.
    assert code(matched) == 200
    assert location_id(matched) == "b-org"
    assert await search_ids(client, "Organization") == ["b-org"]

    # A read: the resource, at its version.
    assert code(read) == 200
    assert read["resource"]["id"] == "b-pre"
    assert read["response"]["etag"] == 'W/"2"'


async def test_entries_are_answered_in_request_order(client: httpx.AsyncClient) -> None:
    """Processed as DELETE, POST, PUT, GET; answered as listed."""
    await client.put("/Patient/o-del", json=patient("O-DEL", id="o-del"))
    items = await batch(
        client,
        entry("GET", "Patient/o-missing"),
        entry("PUT", "Patient/o-put", patient("O-PUT", id="o-put")),
        entry("POST", "Patient", patient("O-POST")),
        entry("DELETE", "Patient/o-del"),
    )
    assert [code(item) for item in items] == [404, 201, 201, 204]
    assert location_id(items[1]) == "o-put"
    assert items[2]["resource"]["identifier"][0]["value"] == "O-POST"
    assert (await client.get("/Patient/o-del")).status_code == 410


async def test_entries_referencing_each_other_fail_alone(
    client: httpx.AsyncClient,
) -> None:
    """http.html#brules: references between batch entries are not resolved; only the
    referencing entry fails, the rest of the batch is processed."""
    org_url = "urn:uuid:2d0b2d8e-5b7a-4a43-8f3e-5c1b7d1e0a01"
    items = await batch(
        client,
        entry("POST", "Organization", organization("linked"), org_url),
        entry("POST", "Patient", patient("LINKED", managingOrganization={"reference": org_url})),
        entry("POST", "Patient", patient("UNLINKED")),
    )
    org, linked, unlinked = items
    assert code(org) == 201
    assert await search_ids(client, "Organization") == [location_id(org)]
    assert_failed(linked, 400)
    assert await search_ids(client, "Patient", identifier=f"{SYS}|LINKED") == []
    assert code(unlinked) == 201
    assert await search_ids(client, "Patient") == [location_id(unlinked)]


async def test_a_malformed_entry_fails_alone(client: httpx.AsyncClient) -> None:
    items = await batch(
        client,
        {"resource": patient("NO-REQUEST")},
        entry("FETCH", "Patient"),
        entry("POST", "Patient/instance", patient("POST-TO-INSTANCE")),
        entry("POST", "Patient", patient("FINE")),
    )
    for item in items[:3]:
        assert_failed(item, 400)
    assert code(items[3]) == 201
    assert await search_ids(client, "Patient") == [location_id(items[3])]


async def test_an_entry_whose_method_is_not_a_string_fails_alone(
    client: httpx.AsyncClient,
) -> None:
    items = await batch(
        client,
        {"request": {"method": ["GET"], "url": "Patient"}},
        {"request": {"method": {"GET": 1}, "url": "Patient"}},
        entry("POST", "Patient", patient("FINE")),
    )
    for item in items[:2]:
        assert_failed(item, 400)
    assert code(items[2]) == 201


async def test_an_operation_entry_fails_alone_and_runs_nothing(client: httpx.AsyncClient) -> None:
    # Before the fix a GET of Appointment/x/$start-virtual-visit ran as a search.
    items = await batch(
        client,
        entry("GET", "Appointment/a1/$start-virtual-visit"),
        entry("POST", "Appointment/a1/$start-virtual-visit", {"resourceType": "Parameters"}),
        entry("POST", "Patient", patient("FINE")),
    )
    for item in items[:2]:
        assert_failed(item, 400)
        assert "operations" in item["response"]["outcome"]["issue"][0]["diagnostics"]
    assert code(items[2]) == 201


async def test_a_failed_batch_entry_does_not_undo_the_others(
    client: httpx.AsyncClient,
) -> None:
    """Unlike a transaction, a batch keeps what succeeded when a later entry fails."""
    items = await batch(
        client,
        entry("POST", "Patient", patient("KEPT")),
        entry("GET", "Patient/nowhere"),
    )
    assert code(items[0]) == 201
    assert_failed(items[1], 404)
    assert await search_ids(client, "Patient", identifier=f"{SYS}|KEPT") == [location_id(items[0])]
