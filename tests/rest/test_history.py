"""history at instance, type and system level with _since, _at, _count and paging
(R4 http.html#history)."""

from __future__ import annotations

from typing import Any

import httpx


async def _walk(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while url:
        page = (await client.get(url)).json()
        assert page["type"] == "history"
        entries.extend(page["entry"])
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), "")
    return entries


async def test_instance_history_newest_first(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json={"resourceType": "Patient"})).json()["id"]
    await client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True})
    await client.patch(
        f"/Patient/{pid}",
        json=[{"op": "replace", "path": "/active", "value": False}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    await client.delete(f"/Patient/{pid}")
    bundle = (await client.get(f"/Patient/{pid}/_history")).json()
    assert bundle["total"] == 4
    methods = [entry["request"]["method"] for entry in bundle["entry"]]
    assert methods == ["DELETE", "PATCH", "PUT", "POST"]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["active"] is False
    assert bundle["entry"][3]["request"]["url"] == "Patient"
    assert bundle["entry"][2]["response"]["etag"] == 'W/"2"'
    assert all(e["fullUrl"].endswith(f"/Patient/{pid}") for e in bundle["entry"])
    # A deleted resource's versions stay readable; the deletion itself is gone.
    assert (await client.get(f"/Patient/{pid}/_history/3")).json()["active"] is False
    assert (await client.get(f"/Patient/{pid}/_history/4")).status_code == 410
    assert (await client.get(f"/Patient/{pid}/_history/9")).status_code == 404


async def test_unknown_instance_history_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/Patient/nobody/_history")).status_code == 404


async def test_type_and_system_history(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json={"resourceType": "Patient"})
    await client.post("/Organization", json={"resourceType": "Organization", "name": "x"})
    patients = (await client.get("/Patient/_history")).json()
    assert patients["total"] == 1
    everything = (await client.get("/_history")).json()
    # MongoDB leaves the whole server's total out: counting it reads every version.
    assert everything.get("total", 2) == 2
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {
        "Patient",
        "Organization",
    }


async def test_paging_sees_each_version_once_while_writes_go_on(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(7):
        await client.post("/Patient", json={"resourceType": "Patient"})
    first = (await client.get("/Patient/_history?_count=3")).json()
    assert len(first["entry"]) == 3 and first["total"] == 7
    # Writes between pages land before the cursor, so they do not shift later pages.
    await client.post("/Patient", json={"resourceType": "Patient"})
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    rest = await _walk(client, next_url)
    seen = [e["resource"]["id"] for e in first["entry"] + rest]
    assert len(seen) == 7 == len(set(seen))


async def test_since_and_at(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json={"resourceType": "Patient"})).json()["id"]
    v2 = (
        await client.put(
            f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "active": True}
        )
    ).json()
    since = v2["meta"]["lastUpdated"]
    recent = (await client.get("/Patient/_history", params={"_since": since})).json()
    assert [e["resource"]["meta"]["versionId"] for e in recent["entry"]] == ["2"]
    future = (await client.get("/_history", params={"_since": "2100-01-01T00:00:00Z"})).json()
    assert future["total"] == 0 and future["entry"] == []
    # _at is a range: during the second version 2 was written in, both were current...
    second = since[:19] + "Z"
    at_second = (await client.get(f"/Patient/{pid}/_history", params={"_at": second})).json()
    assert {e["resource"]["meta"]["versionId"] for e in at_second["entry"]} == {"1", "2"}
    # ...while from the very microsecond of the write, only version 2 was.
    at_write = (await client.get(f"/Patient/{pid}/_history", params={"_at": since})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at_write["entry"]] == ["2"]
    at_past = (await client.get(f"/Patient/{pid}/_history", params={"_at": "2001"})).json()
    assert at_past["entry"] == []
    at_future = (await client.get(f"/Patient/{pid}/_history", params={"_at": "2100"})).json()
    assert [e["resource"]["meta"]["versionId"] for e in at_future["entry"]] == ["2"]


async def test_count_zero_and_cap(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json={"resourceType": "Patient"})
    counted = (await client.get("/Patient/_history?_count=0")).json()
    assert counted["total"] == 1 and counted["entry"] == []


async def test_far_future_dates(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json={"resourceType": "Patient"})
    for params in ({"_since": "9999-12-31"}, {"_at": "9999-12-31"}, {"_at": "9999"}):
        answer = await client.get("/Patient/_history", params=params)
        assert answer.status_code == 200, params


async def test_unknown_parameters_are_ignored_unless_strict(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json={"resourceType": "Patient"})
    lenient = await client.get("/Patient/_history", params={"_foo": "1"})
    assert lenient.status_code == 200 and lenient.json()["total"] == 1
    strict = await client.get(
        "/Patient/_history", params={"_foo": "1"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400
