"""Paging through search results over HTTP (R4 search.html#paging, http.html#paging):
every match once and in order, previous undoes next, and a walk stays exact while other
clients create, update and delete resources between the pages."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from itertools import groupby
from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import (
    create,
    fetch,
    ids,
    link,
    patient,
    put,
    resources_of,
    risk,
)

Params = list[tuple[str, str]]
PAGE = 7


# --- helpers ---------------------------------------------------------------------------


async def walk(client: httpx.AsyncClient, url: str, params: Params) -> list[dict[str, Any]]:
    """Every page, first to last, following `next`."""
    pages = [await fetch(client, url, params)]
    while (next_url := link(pages[-1], "next")) is not None:
        pages.append(await fetch(client, next_url))
        assert len(pages) < 1000, "paging does not end"
    return pages


def cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


# --- a quiet store -----------------------------------------------------------------------


async def test_walking_every_page_sees_each_resource_once_in_order(
    client: httpx.AsyncClient,
) -> None:
    created = sorted([await create(client, patient(f"P{n}")) for n in range(60)])
    await create(client, {"resourceType": "Organization", "name": "not a patient"})
    pages = await walk(client, "/Patient", [("_count", str(PAGE))])
    assert [len(ids(p)) for p in pages] == [7] * 8 + [4]
    seen = [i for p in pages for i in ids(p)]
    # Without _sort the order is by id.
    assert seen == created
    assert link(pages[0], "previous") is None
    assert all(link(p, "previous") is not None for p in pages[1:])
    assert link(pages[-1], "next") is None


async def test_previous_after_next_returns_the_same_page(client: httpx.AsyncClient) -> None:
    created = sorted([await create(client, patient(f"P{n}")) for n in range(30)])
    pages = await walk(client, "/Patient", [("_count", str(PAGE))])
    for number in range(1, len(pages)):
        previous_url = link(pages[number], "previous")
        assert previous_url is not None
        back = await fetch(client, previous_url)
        assert ids(back) == ids(pages[number - 1]), number
        assert (link(back, "previous") is None) == (number == 1)
        # And forward again from the page reached backwards.
        forward_url = link(back, "next")
        assert forward_url is not None
        assert ids(await fetch(client, forward_url)) == ids(pages[number])
    # Walking all the way back from the last page with `previous`.
    backwards = [pages[-1]]
    while (previous_url := link(backwards[-1], "previous")) is not None:
        backwards.append(await fetch(client, previous_url))
        assert len(backwards) <= len(pages)
    assert [ids(p) for p in reversed(backwards)] == [ids(p) for p in pages]
    assert [i for p in pages for i in ids(p)] == created


async def test_paging_with_a_descending_sort_key(client: httpx.AsyncClient) -> None:
    births: dict[str, str | None] = {}
    # 40 distinct dates, 15 sharing 5 dates (ties straddle page boundaries), 5 with none.
    for n in range(40):
        births[await create(client, patient("D", birth=f"{1950 + n}-03-01"))] = f"{1950 + n}-03-01"
    for n in range(15):
        day = f"{1960 + n % 5}-03-01"
        births[await create(client, patient("T", birth=day))] = day
    for _ in range(5):
        births[await create(client, patient("N"))] = None

    pages = await walk(client, "/Patient", [("_sort", "-birthdate"), ("_count", str(PAGE))])
    seen = [i for p in pages for i in ids(p)]
    assert sorted(seen) == sorted(births)
    assert len(seen) == len(set(seen))
    # Exact order of the sort key; the order within a tie is the server's to choose.
    dated = sorted((d for d in births.values() if d is not None), reverse=True)
    assert [births[i] for i in seen] == [*dated, None, None, None, None, None]
    expected_groups = [
        {i for i, d in births.items() if d == day} for day in dict.fromkeys([*dated, None])
    ]
    assert [set(group) for _, group in groupby(seen, key=births.__getitem__)] == expected_groups
    # The birthDate each page shows is the one sorted on.
    assert [r.get("birthDate") for p in pages for r in resources_of(p)] == [births[i] for i in seen]

    # Previous undoes next here too.
    for number in range(1, len(pages)):
        previous_url = link(pages[number], "previous")
        assert previous_url is not None
        assert ids(await fetch(client, previous_url)) == ids(pages[number - 1])


async def test_paging_with_several_sort_keys(client: httpx.AsyncClient) -> None:
    rows = []
    for n in range(24):
        family, birth = f"F{n % 3}", f"{1980 + n % 4}-01-01"
        rows.append((family, birth, await create(client, patient(family, birth=birth))))
    pages = await walk(client, "/Patient", [("_sort", "family,-birthdate,_id"), ("_count", "5")])
    seen = [i for p in pages for i in ids(p)]
    expected = [i for _, _, i in sorted(rows, key=lambda r: (r[0], -int(r[1][:4]), r[2]))]
    assert seen == expected


@pytest.mark.parametrize("descending", [False, True])
async def test_paging_string_and_number_keys_with_ties_and_missing_values(
    client: httpx.AsyncClient, descending: bool
) -> None:
    """Page boundaries fall inside runs of equal values and inside the missing ones."""
    subject = await create(client, patient("Risky"))
    families: dict[str, str | None] = {}
    probabilities: dict[str, float | None] = {}
    for n in range(21):
        family = None if n % 7 == 0 else f"Fam{n % 4}"
        families[await create(client, patient(family))] = family
        probability = None if n % 5 == 0 else [0.1, 0.25, 0.5][n % 3]
        assessment = risk(subject=f"Patient/{subject}", probabilityDecimal=probability)
        probabilities[await create(client, assessment)] = probability
    families[subject] = "Risky"
    sign = "-" if descending else ""
    for url, key, values in (
        ("/Patient", "family", families),
        ("/RiskAssessment", "probability", probabilities),
    ):
        pages = await walk(client, url, [("_sort", f"{sign}{key}"), ("_count", "2")])
        seen = [i for p in pages for i in ids(p)]
        assert sorted(seen) == sorted(values), key
        assert len(seen) == len(set(seen)), key
        present = sorted((v for v in values.values() if v is not None), reverse=descending)
        missing = [None] * sum(v is None for v in values.values())
        assert [values[i] for i in seen] == [*present, *missing], key
        # And back from the last page, through the missing ones into the others.
        back = [pages[-1]]
        while (previous_url := link(back[-1], "previous")) is not None:
            back.append(await fetch(client, previous_url))
            assert len(back) <= len(pages), key
        assert [ids(p) for p in reversed(back)] == [ids(p) for p in pages], key


@pytest.mark.parametrize("count", ["1", "10"])
async def test_a_value_that_sorts_where_missing_ones_do_ties_with_them(
    client: httpx.AsyncClient, count: str
) -> None:
    """A family of one space is indexed as "", where a descending sort puts the
    Patients without a family: they tie, and the tie goes by id, page by page."""
    await put(client, {"resourceType": "Patient", "id": "a"})
    await put(client, {"resourceType": "Patient", "id": "b", "name": [{"family": " "}]})
    await put(client, {"resourceType": "Patient", "id": "c", "name": [{"family": "X"}]})
    pages = await walk(client, "/Patient", [("_sort", "-family"), ("_count", count)])
    assert [i for p in pages for i in ids(p)] == ["c", "a", "b"]


@pytest.mark.parametrize("sign", ["", "-"])
async def test_paging_past_an_open_range(client: httpx.AsyncClient, sign: str) -> None:
    """A range open at one end sorts by its open end (beyond every value) in one
    direction: the cursor of a page ending on it must still lead on."""
    await put(client, risk("r1", probabilityRange={"high": {"value": 50}}))
    await put(client, risk("r2", probabilityRange={"low": {"value": 10}}))
    await put(client, risk("r3", probabilityDecimal=20))
    await put(client, risk("r4"))
    pages = await walk(
        client, "/RiskAssessment", [("_sort", f"{sign}probability"), ("_count", "1")]
    )
    seen = [i for p in pages for i in ids(p)]
    assert seen == (["r1", "r2", "r3", "r4"] if sign == "" else ["r2", "r1", "r3", "r4"])


async def test_paging_a_system_search_keeps_its_types(client: httpx.AsyncClient) -> None:
    wanted: list[str] = []
    for n in range(5):
        wanted.append(
            f"Basic/{await create(client, {'resourceType': 'Basic', 'code': {'text': 'x'}})}"
        )
        wanted.append(f"Patient/{await create(client, patient(f'P{n}'))}")
        # Between Basic and Patient in the (type, id) order: must never leak in.
        await create(client, {"resourceType": "Organization", "name": f"O{n}"})
        await create(
            client, {"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"}}
        )
    pages = await walk(client, "/", [("_type", "Basic,Patient"), ("_count", "3")])
    seen = [f"{r['resourceType']}/{r['id']}" for p in pages for r in resources_of(p)]
    assert sorted(seen) == sorted(wanted)
    assert len(seen) == len(set(seen))


# --- writes between the pages ------------------------------------------------------------


class Writer:
    """Another client: between two pages it creates two Patients (one whose id sorts after
    every server-assigned id, one before), updates the next not yet seen original, the last
    one and the most recently seen one, deletes the oldest Patient it created, and writes an
    Observation, which no Patient search may show."""

    def __init__(self, client: httpx.AsyncClient, originals: list[str]) -> None:
        self.client = client
        self.originals = originals
        self.created: list[str] = []
        self.alive: list[str] = []
        # id -> the number of pages fetched when it was deleted
        self.deleted: dict[str, int] = {}
        # original id -> the number of pages fetched when it was updated
        self.updated: dict[str, int] = {}
        self.rounds = 0

    async def write(self, pages_fetched: int, seen: list[str]) -> None:
        self.rounds += 1
        # Server ids are UUIDs: "w..." sorts after all of them, "0-..." before.
        for new in (f"w{self.rounds:03d}", f"0-{self.rounds:03d}"):
            answer = await self.client.put(f"/Patient/{new}", json={**patient("New"), "id": new})
            assert answer.status_code == 201, answer.text
            self.created.append(new)
            self.alive.append(new)
        originals = set(self.originals)
        unseen = [i for i in self.originals if i not in seen and i not in self.updated]
        already = [i for i in reversed(seen) if i in originals and i not in self.updated]
        for target in dict.fromkeys([*unseen[:1], *unseen[-1:], *already[:1]]):
            # A change that leaves the sort keys (id, birthDate) as they were.
            current = (await self.client.get(f"/Patient/{target}")).json()
            answer = await self.client.put(f"/Patient/{target}", json={**current, "active": True})
            assert answer.status_code == 200, answer.text
            self.updated[target] = pages_fetched
        victim = self.alive.pop(0)
        assert (await self.client.delete(f"/Patient/{victim}")).status_code == 204
        self.deleted[victim] = pages_fetched
        await create(
            self.client,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": f"round {self.rounds}"},
            },
        )


def check_walk(pages: list[dict[str, Any]], originals: list[str], writer: Writer) -> None:
    seen = [i for p in pages for i in ids(p)]
    for number, page in enumerate(pages):
        on_page = ids(page)
        assert len(on_page) == len(set(on_page)), f"page {number} repeats an entry"
        assert all(r["resourceType"] == "Patient" for r in resources_of(page))
        assert len(on_page) <= PAGE
    counts = Counter(seen)
    assert [i for i, n in counts.items() if n > 1] == [], "seen twice"
    # Every resource that existed throughout the walk is seen exactly once.
    assert sorted(i for i in seen if i in set(originals)) == sorted(originals)
    # Created during the walk: at most once (checked above), and a deleted one only on a
    # page fetched before its deletion.
    for number, page in enumerate(pages):
        for resource_id in ids(page):
            if resource_id in writer.deleted:
                assert number < writer.deleted[resource_id], resource_id
    assert set(seen) <= set(originals) | set(writer.created)
    # An original updated before it was reached is shown as updated.
    for number, page in enumerate(pages):
        for resource in resources_of(page):
            fetched_after_update = writer.updated.get(resource["id"], len(pages)) < number + 1
            assert (resource["meta"]["versionId"] == "2") == fetched_after_update, resource["id"]
            assert (resource.get("active") is True) == fetched_after_update


@pytest.mark.parametrize("sort", [None, "-birthdate"])
async def test_walk_while_other_clients_write_between_pages(
    client: httpx.AsyncClient, sort: str | None
) -> None:
    originals = sorted(
        [await create(client, patient(f"O{n}", birth=f"{1940 + n}-01-01")) for n in range(60)]
    )
    writer = Writer(client, originals)
    handoff: asyncio.Queue[int | None] = asyncio.Queue()
    done: asyncio.Queue[None] = asyncio.Queue()
    pages: list[dict[str, Any]] = []

    async def reader() -> None:
        params = [("_count", str(PAGE))] + ([("_sort", sort)] if sort else [])
        url: str | None = "/Patient"
        first = True
        while url is not None:
            pages.append(await fetch(client, url, params if first else None))
            first = False
            url = link(pages[-1], "next")
            if url is not None:
                # Let the other client write, and wait until it has.
                await handoff.put(len(pages))
                await done.get()
        await handoff.put(None)

    async def other_client() -> None:
        while (fetched := await handoff.get()) is not None:
            seen = [i for p in pages for i in ids(p)]
            await writer.write(fetched, seen)
            await done.put(None)

    await asyncio.gather(reader(), other_client())
    assert writer.rounds == len(pages) - 1 >= 8
    check_walk(pages, originals, writer)
    # The walk did meet the writes: originals updated before they were reached, and
    # resources created during the walk.
    versions = Counter(r["meta"]["versionId"] for p in pages for r in resources_of(p))
    assert versions["2"] >= 8
    assert {i for p in pages for i in ids(p)} & set(writer.created)
    if sort is None:
        # By id, and the originals among them still in id order.
        seen = [i for p in pages for i in ids(p)]
        assert seen == sorted(seen)
    else:
        births = [r.get("birthDate") for p in pages for r in resources_of(p)]
        # Descending, the ones without a birthDate (those created during the walk) last.
        assert births == sorted(births, key=lambda b: b or "", reverse=True)
    # Afterwards a fresh walk sees exactly what is left.
    final = await walk(client, "/Patient", [("_count", str(PAGE))])
    left = sorted(set(originals) | set(writer.created) - set(writer.deleted))
    assert [i for p in final for i in ids(p)] == left


async def test_walk_with_writes_running_concurrently(client: httpx.AsyncClient) -> None:
    """The same invariants when the writes run at the same time as the page fetches."""
    originals = sorted([await create(client, patient(f"O{n}")) for n in range(60)])
    writer = Writer(client, originals)
    params = [("_count", str(PAGE))]
    pages = [await fetch(client, "/Patient", params)]
    while (next_url := link(pages[-1], "next")) is not None:
        seen = [i for p in pages for i in ids(p)]
        # Deleted / updated before this page: count it as fetched after them.
        page, _ = await asyncio.gather(fetch(client, next_url), writer.write(len(pages), seen))
        pages.append(page)
    seen = [i for p in pages for i in ids(p)]
    assert len(seen) == len(set(seen))
    assert sorted(i for i in seen if i in set(originals)) == originals
    assert set(seen) <= set(originals) | set(writer.created)
    for number, page in enumerate(pages):
        assert len(ids(page)) == len(set(ids(page)))
        for resource_id in ids(page):
            if resource_id in writer.deleted:
                # Deleted while this page was fetched at the latest.
                assert number <= writer.deleted[resource_id], resource_id


# --- cursors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("garbage", id="not-a-cursor"),
        pytest.param("%%%", id="not-base64"),
        pytest.param("not-base64!", id="stray-characters"),
        pytest.param(cursor("sideways", "Patient", "x"), id="unknown-direction"),
        pytest.param(cursor("after"), id="no-values"),
        pytest.param(cursor("after", "Patient"), id="too-few-values"),
        pytest.param(cursor("after", "Patient", "x", "y"), id="too-many-values"),
        pytest.param(base64.urlsafe_b64encode(b'{"after": 1}').decode(), id="json-object"),
        pytest.param(base64.urlsafe_b64encode(b"not json").decode(), id="not-json"),
        pytest.param(cursor("after", ["Patient"], {"id": "x"}), id="list-and-object-values"),
        pytest.param(cursor("before", {"type": "Patient"}, "x"), id="object-value-before"),
    ],
)
async def test_tampered_cursor_is_400(client: httpx.AsyncClient, value: str) -> None:
    for n in range(3):
        await create(client, patient(f"P{n}"))
    answer = await client.get("/Patient", params={"_count": "1", "_cursor": value})
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"


async def test_truncated_and_foreign_cursors_are_400(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create(client, patient(f"P{n}", birth="2000-01-01"))
    first = await fetch(client, "/Patient", [("_count", "1")])
    next_url = link(first, "next")
    assert next_url is not None
    value = httpx.URL(next_url).params["_cursor"]
    truncated = await client.get("/Patient", params={"_count": "1", "_cursor": value[:-4]})
    assert truncated.status_code == 400
    # A cursor of the default order does not fit a search sorted on another key.
    foreign = await client.get(
        "/Patient", params={"_count": "1", "_sort": "birthdate", "_cursor": value}
    )
    assert foreign.status_code == 400
