"""Conditional create, update and delete (R4 http.html#ccreate, #cond-update, #cdelete),
matched through the search path on _id, identifier and _lastUpdated."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


def patient(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": value}],
        **extra,
    }


async def test_if_none_exist_creates_then_matches(client: httpx.AsyncClient) -> None:
    headers = {"If-None-Exist": "identifier=urn:mrn|A1"}
    first = await client.post("/Patient", json=patient("A1"), headers=headers)
    assert first.status_code == 201
    second = await client.post("/Patient", json=patient("A1"), headers=headers)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    history = (await client.get("/Patient/_history")).json()
    assert history["total"] == 1


async def test_if_none_exist_token_forms(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient("B2"))).json()
    for criteria in (
        "identifier=B2",
        "identifier=urn:mrn|",
        "identifier=urn:mrn|B2",
        f"_id={created['id']}",
        "identifier=urn:other|B2,urn:mrn|B2",
    ):
        answer = await client.post(
            "/Patient", json=patient("B2"), headers={"If-None-Exist": criteria}
        )
        assert answer.status_code == 200, criteria
    for criteria in ("identifier=|B2", "identifier=urn:other|B2", "identifier=B2&_id=nope"):
        answer = await client.post(
            "/Patient", json=patient("B2"), headers={"If-None-Exist": criteria}
        )
        assert answer.status_code == 201, criteria


async def test_if_none_exist_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient("C3"))
    await client.post("/Patient", json=patient("C3"))
    answer = await client.post(
        "/Patient", json=patient("C3"), headers={"If-None-Exist": "identifier=C3"}
    )
    assert answer.status_code == 412


async def test_concurrent_conditional_creates_make_one(client: httpx.AsyncClient) -> None:
    headers = {"If-None-Exist": "identifier=urn:mrn|RACE"}
    answers = await asyncio.gather(
        *(client.post("/Patient", json=patient("RACE"), headers=headers) for _ in range(10))
    )
    assert sorted(a.status_code for a in answers) == [200] * 9 + [201]
    assert len({a.json()["id"] for a in answers}) == 1


async def test_last_updated_criteria(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient("D4"))).json()
    day = created["meta"]["lastUpdated"][:10]
    for criteria, status in (
        (f"_lastUpdated={day}&identifier=D4", 200),
        (f"_lastUpdated=ge{day}&identifier=D4", 200),
        (f"_lastUpdated=lt{day}&identifier=D4", 201),
        ("_lastUpdated=gt2100-01-01&identifier=D4", 201),
        ("_lastUpdated=le2100&identifier=D4", 200),
    ):
        answer = await client.post(
            "/Patient", json=patient("D4"), headers={"If-None-Exist": criteria}
        )
        assert answer.status_code == status, criteria
        if status == 201:
            await client.delete(f"/Patient/{answer.json()['id']}")


async def test_conditional_update(client: httpx.AsyncClient) -> None:
    created = await client.put("/Patient?identifier=urn:mrn|E5", json=patient("E5"))
    assert created.status_code == 201
    pid = created.json()["id"]
    updated = await client.put(
        "/Patient?identifier=urn:mrn|E5", json=patient("E5", gender="female")
    )
    assert updated.status_code == 200
    assert updated.json()["id"] == pid
    assert updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put("/Patient?identifier=E5", json=patient("E5", id="other"))
    assert wrong_id.status_code == 400


async def test_conditional_update_no_match_with_id_is_update_as_create(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.put("/Patient?identifier=F6", json=patient("F6", id="f6"))
    assert answer.status_code == 201
    assert answer.headers["location"].endswith("/Patient/f6/_history/1")


async def test_conditional_update_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient("G7"))
    await client.post("/Patient", json=patient("G7"))
    assert (await client.put("/Patient?identifier=G7", json=patient("G7"))).status_code == 412


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient("H8"))).json()["id"]
    assert (await client.delete("/Patient?identifier=urn:mrn|H8")).status_code == 204
    assert (await client.get(f"/Patient/{pid}")).status_code == 410
    # No match: nothing to do, still a success.
    assert (await client.delete("/Patient?identifier=urn:mrn|H8")).status_code == 204


async def test_conditional_delete_several_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/Patient", json=patient("I9"))
    await client.post("/Patient", json=patient("I9"))
    assert (await client.delete("/Patient?identifier=I9")).status_code == 412


async def test_identifier_index_follows_updates_and_deletes(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/Patient", json=patient("OLD"))).json()["id"]
    await client.put(f"/Patient/{pid}", json=patient("NEW", id=pid))
    probe = await client.post(
        "/Patient", json=patient("X"), headers={"If-None-Exist": "identifier=OLD"}
    )
    assert probe.status_code == 201
    await client.delete(f"/Patient/{pid}")
    probe = await client.post(
        "/Patient", json=patient("X"), headers={"If-None-Exist": "identifier=NEW"}
    )
    assert probe.status_code == 201
