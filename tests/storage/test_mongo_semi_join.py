"""Chains and `_has` on MongoDB never build an unbounded filter (R4 search.html#chaining
and #has; MongoDB's 16 MiB limit on a command): up to `join_keys` matches go into one
`$in`, past that the criterion runs as a semi-join over batches of candidates
(storage/mongo/search.py). The answers must be the same either way, page by page and
in total, and no filter the store sends may list more than a batch of keys.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import bson
import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.errors import TooCostly
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.mongo.search import JOIN_KEYS, Compiler
from tests.mongomock_async import AsyncMockClient

PATIENTS = 90
Document = dict[str, Any]


def longest_in(document: Any) -> int:
    """The longest `$in` list anywhere in a filter or pipeline."""
    if isinstance(document, dict):
        own = len(document["$in"]) if isinstance(document.get("$in"), list) else 0
        return max([own, *(longest_in(value) for value in document.values())])
    if isinstance(document, list | tuple):
        return max([0, *(longest_in(value) for value in document)])
    return 0


@pytest.fixture
async def stores() -> AsyncIterator[tuple[AsyncMockClient, MongoStore, MongoStore]]:
    """One database, read by a store that semi-joins past 20 keys and one that never does."""
    client = AsyncMockClient()
    narrow = MongoStore("mongodb://mock/fhirserver", client=client, join_keys=20)  # type: ignore[arg-type]
    wide = MongoStore("mongodb://mock/fhirserver", client=client, join_keys=10**6)  # type: ignore[arg-type]
    await narrow.open()
    await wide.open()
    context = WriteContext()
    for n in range(PATIENTS):
        born = "1940-01-01" if n % 2 else "1980-01-01"
        patient = {"resourceType": "Patient", "id": f"p{n:03d}", "birthDate": born}
        await crud.update(narrow, context, "Patient", patient["id"], patient)
        for k in range(2):
            code = "a" if n % 3 == 0 and k == 0 else "b"
            observation = {
                "resourceType": "Observation",
                "id": f"o{n:03d}{k}",
                "status": "final",
                "code": {"coding": [{"system": "urn:c", "code": code}]},
                "subject": {"reference": f"Patient/p{n:03d}"},
            }
            await crud.update(narrow, context, "Observation", observation["id"], observation)
    yield client, narrow, wide
    await narrow.close()
    await wide.close()


async def every_page(store: MongoStore, query: SearchQuery) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.search(replace(query, cursor=cursor))
        ids += [version.id for version in page.matches]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


@pytest.mark.parametrize(
    ("resource_type", "params", "expected"),
    [
        (
            "Observation",
            [("subject:Patient.birthdate", "lt1950"), ("_count", "7")],
            # Odd patients are born in 1940: both their Observations.
            2 * (PATIENTS // 2),
        ),
        (
            "Patient",
            [("_has:Observation:subject:code", "urn:c|a"), ("_count", "9"), ("_sort", "-_id")],
            # Every third patient has an Observation coded `a`.
            PATIENTS // 3,
        ),
        (
            "Observation",
            [("subject:Patient.birthdate", "lt1950"), ("code", "urn:c|a"), ("_count", "4")],
            len([n for n in range(PATIENTS) if n % 2 and n % 3 == 0]),
        ),
    ],
)
async def test_a_wide_chain_or_has_pages_as_the_plain_filter_does(
    stores: tuple[AsyncMockClient, MongoStore, MongoStore],
    resource_type: str,
    params: list[tuple[str, str]],
    expected: int,
) -> None:
    client, narrow, wide = stores
    query = parse_search((resource_type,), params)
    client.queries.clear()
    joined = await every_page(narrow, query)
    assert len(joined) == len(set(joined)) == expected
    assert longest_in(client.queries) <= 20
    client.queries.clear()
    assert joined == await every_page(wide, query)
    assert longest_in(client.queries) > 20, "the criterion is not wide: nothing was semi-joined"
    client.queries.clear()
    counted = parse_search((resource_type,), [*params, ("_total", "accurate")])
    assert (await narrow.search(counted)).total == expected
    assert longest_in(client.queries) <= 20


async def test_a_conditional_match_through_a_wide_chain(
    stores: tuple[AsyncMockClient, MongoStore, MongoStore],
) -> None:
    _, narrow, _ = stores
    query = parse_search(("Observation",), [("subject:Patient.birthdate", "lt1950")])
    async with narrow.unit_of_work() as unit:
        found = await unit.match(query, 3)
    assert len(found) == 3 and all(int(v.id[1:4]) % 2 for v in found)


async def test_a_wide_chain_inside_another_criterion_is_refused_as_too_costly(
    stores: tuple[AsyncMockClient, MongoStore, MongoStore],
) -> None:
    _, narrow, _ = stores
    # The chain is one alternative of an OR (the comma): no batch of candidates can
    # stand in for it, so it must fit in one filter.
    query = parse_search(
        ("Observation",), [("subject:Patient.birthdate", "lt1950"), ("_id", "o0010,o0011")]
    )
    assert len((await narrow.search(query)).matches) == 2
    nested = parse_search(
        ("Observation",), [("subject:Patient._has:Observation:subject:code", "b")]
    )
    with pytest.raises(TooCostly):
        await narrow.search(nested)


# --- 500,000 resources, synthesised -----------------------------------------------------

SYNTHETIC = 500_000


class Synthetic:
    """A `resources` collection of 500,000 Patients, all born before 1950, each the
    subject of one Observation coded `a`: sub-queries answered from arithmetic (mongomock
    takes seconds per query at this size), every filter and pipeline kept."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def find(
        self, where: Document, projection: Document, limit: int | None = None
    ) -> list[Document]:
        self.sent.append(where)
        asked = [
            int(identity[1:])
            for condition in where["$and"]
            if "id" in condition and isinstance(condition["id"], dict)
            for identity in condition["id"]["$in"]
        ]
        if asked:
            return [{"type": "Patient", "id": f"p{n}"} for n in asked if n % 2 == 0]
        count = SYNTHETIC if limit is None else min(limit, SYNTHETIC)
        return [{"type": "Patient", "id": f"p{n}"} for n in range(count)]

    async def aggregate(self, pipeline: list[Document]) -> list[Document]:
        self.sent.append(pipeline)
        limit = next((stage["$limit"] for stage in pipeline if "$limit" in stage), SYNTHETIC)
        among = longest_in(pipeline[0])
        if among:
            ids = next(
                stage["$match"]["ref.ti"]["$in"]
                for stage in pipeline
                if "ref.ti" in stage.get("$match", {})
            )
            return [{"_id": {"tt": "Patient", "ti": i}} for i in ids if int(i[1:]) % 3 == 0]
        return [{"_id": {"tt": "Patient", "ti": f"p{n}"}} for n in range(min(limit, SYNTHETIC))]


@pytest.mark.parametrize(
    "params",
    [[("subject:Patient.birthdate", "lt1950")], [("_has:Observation:subject:code", "a")]],
)
async def test_over_500k_matches_no_filter_reaches_1_mb(params: list[tuple[str, str]]) -> None:
    synthetic = Synthetic()
    target = "Observation" if params[0][0].startswith("subject") else "Patient"
    compiler = Compiler(synthetic.find, synthetic.aggregate)
    where = await compiler.filter(parse_search((target,), params))
    assert len(compiler.joins) == 1
    rng = random.Random(7)
    candidates = [
        {
            "type": target,
            "id": f"x{n}" if target == "Observation" else f"p{n * 7}",
            "ref": [{"p": "subject", "tt": "Patient", "ti": f"p{rng.randrange(SYNTHETIC)}"}],
        }
        for n in range(JOIN_KEYS)
    ]
    kept = await compiler.keep(candidates)
    if target == "Observation":
        assert kept == [c for c in candidates if int(c["ref"][0]["ti"][1:]) % 2 == 0]
    else:
        assert kept == [c for c in candidates if int(c["id"][1:]) % 3 == 0]
    sizes = [len(bson.encode({"q": sent})) for sent in [where, *synthetic.sent]]
    assert max(sizes) < 1_000_000, sizes


# --- 500,000 resources in mongomock, over HTTP ------------------------------------------


async def test_a_chain_over_500k_stored_resources_answers_without_a_wide_filter(
    settings: Settings,
) -> None:
    """500,000 Patients born before 1950 in mongomock's storage (put there after the
    Observations are written: mongomock reads every document on each query, an `_id`
    lookup included), and Observations of a few of them. The chain's criterion matches
    all 500,000, which one `$in` would list in about 10 MB. The search pages and counts
    over HTTP, and no query the store sends reaches 1 MB or lists more than JOIN_KEYS
    keys (with the semi-join taken out, one filter is 9.8 MB)."""
    client = AsyncMockClient()
    store = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/fhir") as http:
            old = {"resourceType": "Patient", "id": "template", "birthDate": "1940-01-01"}
            young = {"resourceType": "Patient", "id": "young", "birthDate": "1990-01-01"}
            for patient in (old, young):
                assert (await http.put(f"/Patient/{patient['id']}", json=patient)).is_success
            # Subjects: stored and old (kept), young, and absent (left out).
            subjects = [f"p{n * (SYNTHETIC // 10)}" for n in range(8)] + [
                "young",
                "absent",
                "template",
            ]
            for n, subject in enumerate(subjects):
                observation = {
                    "resourceType": "Observation",
                    "id": f"o{n:02d}",
                    "status": "final",
                    "code": {"text": "weight"},
                    "subject": {"reference": f"Patient/{subject}"},
                }
                assert (await http.put(f"/Observation/o{n:02d}", json=observation)).is_success
            template = client.sync["fhirserver"]["resources"].find_one({"_id": "Patient/template"})
            body = bytes(template["body"])
            client.load(
                "fhirserver",
                "resources",
                (
                    template
                    | {
                        "_id": f"Patient/p{n}",
                        "id": f"p{n}",
                        # Numbered above every written version (the store never reads it here).
                        "seq": 2**40 + n,
                        "body": body.replace(b'"template"', f'"p{n}"'.encode()),
                    }
                    for n in range(SYNTHETIC)
                ),
            )
            client.queries.clear()
            url: str | None = (
                "/Observation?subject:Patient.birthdate=lt1950&_count=5&_total=accurate"
            )
            found: list[str] = []
            while url is not None:
                response = await http.get(url)
                assert response.status_code == 200, response.text
                bundle = response.json()
                assert bundle["total"] == 9
                found += [entry["resource"]["id"] for entry in bundle.get("entry", [])]
                url = next(
                    (link["url"] for link in bundle["link"] if link["relation"] == "next"), None
                )
    assert found == [f"o{n:02d}" for n in range(8)] + ["o10"]
    sent = [query[2] for query in client.queries]
    assert max(len(bson.encode({"q": document})) for document in sent) < 1_000_000
    assert 0 < longest_in(sent) <= JOIN_KEYS
