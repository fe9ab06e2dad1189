"""Issue 20, finding 2: index values are cut to a bounded length (search/extract.py
INDEX_CUT), the database grows with the indexed data and not with string length, and
searches stay exact: what a cut lets in is confirmed on the resource (R4
search.html#string, #token, #uri; http.html#ccreate for conditional matching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.config import Settings
from fhirserver.interactions import crud, search
from fhirserver.search.extract import INDEX_CUT

LONG = "x" * 300


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "fhir.sqlite"), run_jobs=False)


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    created = await client.post(f"/{resource['resourceType']}", json=resource)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def found(client: httpx.AsyncClient, path: str, **params: str) -> list[str]:
    answer = await client.get(path, params=params)
    assert answer.status_code == 200, answer.text
    return sorted(entry["resource"]["id"] for entry in answer.json().get("entry", []))


def patient(family: str, identifier: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": family}]}
    if identifier is not None:
        resource["identifier"] = [{"system": "urn:x", "value": identifier}]
    return resource


async def test_long_strings_are_found_exactly(client: httpx.AsyncClient) -> None:
    a = await create(client, patient(LONG + "A-end"))
    b = await create(client, patient(LONG + "B-end"))
    c = await create(client, patient("x" * 100))
    d = await create(client, patient("y" * 400 + "needle"))
    assert await found(client, "/Patient", **{"family:exact": LONG + "A-end"}) == [a]
    assert await found(client, "/Patient", family=LONG + "B") == [b]
    assert await found(client, "/Patient", family="x" * 50) == sorted([a, b, c])
    assert await found(client, "/Patient", family=LONG) == sorted([a, b])
    assert await found(client, "/Patient", family="x" * INDEX_CUT) == sorted([a, b])
    assert await found(client, "/Patient", **{"family:exact": "x" * INDEX_CUT}) == []
    # Text past the cut is still found by :contains.
    assert await found(client, "/Patient", **{"family:contains": "needle"}) == [d]
    assert await found(client, "/Patient", **{"family:contains": "B-END"}) == [b]
    assert await found(client, "/Patient", **{"family:contains": "x" * 120}) == sorted([a, b])


async def test_a_total_that_cannot_be_exact_is_left_out(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "COUNT_AT_MOST", 2)
    monkeypatch.setattr(search, "COUNT_PAGE", 1)
    for end in "ABC":
        await create(client, patient(LONG + end))
    exact = await client.get("/Patient", params={"family": "xx", "_total": "accurate"})
    assert exact.json()["total"] == 3
    confirmed = await client.get(
        "/Patient", params={"family:exact": LONG + "A", "_total": "accurate"}
    )
    assert len(confirmed.json()["entry"]) == 1
    assert "total" not in confirmed.json()
    count = await client.get("/Patient", params={"family:exact": LONG + "A", "_summary": "count"})
    assert count.status_code == 503
    assert count.json()["issue"][0]["code"] == "too-costly"


async def test_long_tokens_and_uris_are_found_exactly(client: httpx.AsyncClient) -> None:
    one = await create(client, patient("P", "c" * 300 + "1"))
    two = await create(client, patient("P", "c" * 300 + "2"))
    assert await found(client, "/Patient", identifier="urn:x|" + "c" * 300 + "2") == [two]
    assert await found(client, "/Patient", identifier="c" * 300 + "1") == [one]
    assert await found(client, "/Patient", identifier="c" * 300) == []
    base = "http://example.org/" + "p" * 300
    first = await create(client, {"resourceType": "ValueSet", "status": "draft", "url": base + "1"})
    await create(client, {"resourceType": "ValueSet", "status": "draft", "url": base + "2"})
    assert await found(client, "/ValueSet", url=base + "1") == [first]
    assert len(await found(client, "/ValueSet", **{"url:below": base})) == 2
    assert await found(client, "/ValueSet", **{"url:above": base + "1/more"}) == [first]


async def test_conditional_create_matches_the_whole_value(client: httpx.AsyncClient) -> None:
    await create(client, patient("P", "c" * 300 + "1"))
    headers = {"If-None-Exist": "identifier=urn:x|" + "c" * 300 + "2"}
    other = await client.post("/Patient", json=patient("Q", "c" * 300 + "2"), headers=headers)
    assert other.status_code == 201
    again = await client.post("/Patient", json=patient("Q", "c" * 300 + "2"), headers=headers)
    assert again.status_code == 200 and again.json()["id"] == other.json()["id"]


def stored_bytes(path: Path) -> int:
    """The SQLite file with its journal (0 for MongoDB, which has none here)."""
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def longest_text(value: Any) -> int:
    """The longest string anywhere in `value` (a stored row or document)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((longest_text(v) for v in value.values()), default=0)
    if isinstance(value, list | tuple):
        return max((longest_text(v) for v in value), default=0)
    return 0


async def test_the_index_grows_with_the_data_not_the_string(
    client: httpx.AsyncClient, settings: Settings, dump: Any
) -> None:
    await create(client, patient("warm-up"))
    store = Path(settings.sqlite_path)
    before = stored_bytes(store)
    family = "F" * 5_000_000
    await create(client, patient(family))
    # The body (bytes) is kept with its version; no index value (a string) comes near
    # its length: every one is cut.
    assert longest_text(dump()) <= INDEX_CUT
    if before:
        # Before the cut: family, name and phonetic kept it again, exact and normalized.
        grown = stored_bytes(store) - before
        assert grown < 2.5 * len(family), f"{grown / 1e6:.1f} MB for a 5 MB name"
    assert await found(client, "/Patient", family="F" * 10) != []


async def test_a_conditional_match_too_broad_to_confirm_is_refused(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More candidates share the cut prefix than are confirmed: the one that matches
    may be among those not compared, so creating would risk a duplicate."""
    monkeypatch.setattr(crud, "CONFIRM_AT_MOST", 3)
    for n in range(4):
        await create(client, patient("P", "c" * 300 + str(n)))
    headers = {"If-None-Exist": "identifier=urn:x|" + "c" * 300 + "3"}
    answer = await client.post("/Patient", json=patient("P", "c" * 300 + "3"), headers=headers)
    assert answer.status_code == 503, answer.text
    assert answer.json()["issue"][0]["code"] == "too-costly"
    assert len(await found(client, "/Patient", identifier="c" * 300 + "3")) == 1


async def test_counts_of_searches_past_the_cut_are_exact(client: httpx.AsyncClient) -> None:
    """search.html#total / #summary: `_summary=count` and `_total=accurate` count what
    matches, not what shares a cut prefix (search/confirm.py)."""
    await create(client, patient(LONG + "A-needle"))
    await create(client, patient(LONG + "B"))
    await create(client, patient("short needle"))
    await create(client, patient("other"))
    for params in (
        {"family:contains": "needle", "_summary": "count"},
        {"family:contains": "needle", "_total": "accurate"},
        {"family:contains": "needle", "_count": "0"},
        {"family": LONG + "A", "_summary": "count"},
    ):
        answer = await client.get("/Patient", params=params)
        assert answer.status_code == 200, answer.text
        expected = 1 if "family" in params else 2
        assert answer.json().get("total") == expected, (params, answer.json())


async def test_a_confirmed_total_is_the_same_on_every_page(client: httpx.AsyncClient) -> None:
    for end in "ABC":
        await create(client, patient(LONG + end + " needle"))
    await create(client, patient("other"))
    params = {"family:contains": "needle", "_total": "accurate", "_count": "1"}
    page = (await client.get("/Patient", params=params)).json()
    totals = [page.get("total")]
    while next_link := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        page = (await client.get(next_link[0])).json()
        totals.append(page.get("total"))
    assert totals == [3, 3, 3]
