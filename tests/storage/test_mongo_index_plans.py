"""Every query the MongoDB store sends is served by a declared index, and every declared
index serves some query (MongoDB manual "Query Plans", "Compound Indexes" prefixes,
"Multikey Index Bounds" for `$elemMatch`; the ESR rule).

No server is needed to check this: the workload below drives the store on mongomock
through every query shape it builds (each parameter type and modifier, chains and
`_has` both as a filter and as a semi-join, sorts, includes, history, jobs, the change
feed, records, conditional writes, reads), the adapter keeps each filter, pipeline and
sort, and a planner applies MongoDB's rules for choosing among the declared indexes:

- an index is usable when the query bounds its first key (an equality, `$in` or range;
  `$ne`, `$not` and unanchored regexes bound nothing), or when the query has no bounds
  and sorts on its first key (an index scan in order);
- its bounds extend over the keys that follow while the query bounds them; fields of
  one `$elemMatch` bound the keys of that array together (multikey bounds);
- each branch of an `$or` needs a usable index of its own;
- a sort is given by an index when, past its keys bound to one value, its next keys
  are the sort's fields in the sort's directions, or all reversed (a backward scan);
- a query must start from one of its criteria (a field or index array it bounds other
  than the resource type): the chosen index bounds it, rather than walking every
  resource of the type; a query with no criteria must read an index in its sort order
  (the ESR rule), not sort everything it reads.

The query shapes that scan by design are listed in `SCANS` with the reason. The last
test drops each declared index in turn and checks that the planner then flags a shape,
so that these assertions are known to notice a missing index.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

import pytest

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import HistoryQuery, Job
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.mongo.documents import INDEXES
from tests.mongomock_async import AsyncMockClient

Document = dict[str, Any]
# An index's keys, a descending key written "-key".
Index = tuple[str, ...]
Sort = list[tuple[str, int]]
T0 = datetime(2024, 1, 1, tzinfo=UTC)

# (collection, operation, the sorted set of fields a query bounds): scans by design.
SCANS: dict[tuple[str, str], str] = {
    ("resources", "count"): "Store.count(): the reindex's progress total, counted once per run",
}

SEARCHES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Patient", [("name", "smi")]),
    ("Patient", [("name:exact", "Smith")]),
    ("Patient", [("name:contains", "mit")]),
    ("Patient", [("identifier", "urn:s|1")]),
    ("Patient", [("identifier", "1"), ("gender:not", "male")]),
    ("Patient", [("birthdate", "ge1950"), ("_sort", "-birthdate")]),
    ("Patient", [("_lastUpdated", "gt2020-01-01")]),
    ("Patient", [("_id", "p1,p2")]),
    ("Patient", [("name:missing", "false")]),
    ("Patient", [("_has:Observation:subject:code", "urn:c|a")]),
    ("Patient", [("_has:Observation:subject:code", "urn:c|b")]),
    ("Patient", [("_revinclude", "Observation:subject"), ("_total", "accurate")]),
    ("Observation", [("subject", "Patient/p1"), ("_include", "Observation:subject")]),
    ("Observation", [("subject:Patient.name", "smith")]),
    ("Observation", [("subject:Patient.birthdate", "lt1950"), ("_count", "2")]),
    ("Observation", [("value-quantity", "gt5|http://unitsofmeasure.org|mg")]),
    ("Observation", [("code-value-quantity", "urn:c|a$gt5")]),
    ("Observation", [("date", "ge2020"), ("_sort", "date")]),
    # Sorts with no criteria: read in index order, page after page, missing values last.
    ("Patient", [("_sort", "birthdate"), ("_count", "2")]),
    ("Patient", [("_sort", "-birthdate"), ("_count", "2")]),
    ("Observation", [("_sort", "date"), ("_count", "3")]),
    ("Observation", [("_sort", "-date"), ("_count", "3")]),
    ("Patient", [("_sort", "_lastUpdated"), ("_count", "4")]),
    ("Patient", [("_sort", "-_lastUpdated"), ("_count", "4")]),
    ("ValueSet", [("url", "http://example.org/vs/1")]),
    ("ValueSet", [("url:below", "http://example.org/vs")]),
    ("Encounter", [("subject", "http://example.org/fhir/Patient/p1")]),
]


@pytest.fixture(scope="module")
def workload() -> Iterator[list[list[Any]]]:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete(_record())
    finally:
        loop.close()


async def _record() -> list[list[Any]]:
    client = AsyncMockClient()
    store = MongoStore("mongodb://mock/fhirserver", client=client, join_keys=3)  # type: ignore[arg-type]
    await store.open()
    context = WriteContext()
    for n in range(8):
        await crud.update(
            store,
            context,
            "Patient",
            f"p{n}",
            {
                "resourceType": "Patient",
                "id": f"p{n}",
                "name": [{"family": "Smith"}],
                "gender": "female",
                "birthDate": "1940-01-01",
                "identifier": [{"system": "urn:s", "value": str(n)}],
            },
        )
        await crud.create(
            store,
            context,
            "Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "urn:c", "code": "b"}]},
                "subject": {"reference": f"Patient/p{n}"},
                "effectiveDateTime": "2021-01-01",
                "valueQuantity": {"value": 6, "system": "http://unitsofmeasure.org", "code": "mg"},
            },
        )
    await crud.create(
        store,
        context,
        "ValueSet",
        {"resourceType": "ValueSet", "status": "active", "url": "http://example.org/vs/1"},
    )
    await crud.create(
        store,
        context,
        "Encounter",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "urn:x", "code": "VR"},
            "subject": {"reference": "http://example.org/fhir/Patient/p1"},
        },
    )
    await crud.update(store, context, "Patient", "p8", {"resourceType": "Patient", "id": "p8"})
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:s", "value": "9"}]}
    await crud.create(store, context, "Patient", patient, [("identifier", "urn:s|9")])
    await crud.delete(store, context, "Patient", "p7")
    client.queries.clear()

    for resource_type, params in SEARCHES:
        # Every page forwards, then one back: each read of a keyset page.
        query = parse_search((resource_type,), params)
        page = await store.search(query)
        while page.next_cursor is not None:
            page = await store.search(replace(query, cursor=page.next_cursor))
        if page.previous_cursor is not None:
            await store.search(replace(query, cursor=page.previous_cursor))
    await crud.create(store, context, "Patient", patient, [("identifier", "urn:s|9")])
    await crud.update(
        store, context, "Patient", "p1", {"resourceType": "Patient", "id": "p1", "gender": "male"}
    )
    await store.read("Patient", "p1")
    await store.vread("Patient", "p1", 1)
    await store.read_many([("Patient", "p1"), ("Observation", "x")])
    for query in (
        HistoryQuery(resource_type="Patient", id="p1"),
        HistoryQuery(resource_type="Patient"),
        HistoryQuery(),
        HistoryQuery(since=T0),
        HistoryQuery(at=(T0, T0 + timedelta(days=9999))),
    ):
        await store.history(query)
    page = await store.changes(0, 3)
    await store.changes(page[-1].seq, 100)
    await store.settled_seq()
    await store.scan(None, 3)
    await store.scan(("Patient", "p1"), 3)
    async with store.unit_of_work() as unit:
        await unit.put_job(Job("kind", "key", T0))
    job = await store.claim_job(["kind"], "me", T0 + timedelta(1), timedelta(minutes=1))
    assert job is not None
    await store.retry_job(job, T0)
    job = await store.claim_job(["kind"], "me", T0 + timedelta(1), timedelta(minutes=1))
    assert job is not None
    await store.finish_job(job)
    async with store.unit_of_work() as unit:
        await unit.drop_job("kind", "key")
    await store.put_record("client", "a", {"x": 1}, None)
    await store.get_record("client", "a", T0)
    await store.list_records("client", T0)
    await store.replace_record("client", "a", {"x": 1}, {"x": 2}, None, T0)
    await store.add_record("jti", "b", {}, T0 + timedelta(1), T0)
    await store.take_record("jti", "b", T0)
    await store.delete_record("client", "a")
    await store.count()
    await store.close()
    return client.queries


# --- the planner ------------------------------------------------------------------------

Bounds = dict[str, str]  # field -> "eq" | "in" (several values) | "range"


def alternatives(condition: Any, prefix: str = "") -> list[Bounds]:
    """The bounds a filter puts on fields, one set per `$or` branch (combined over
    `$and`); fields of an `$elemMatch` named with their array's path."""
    if not isinstance(condition, dict):
        return [{}]
    combined: list[Bounds] = [{}]
    for key, value in condition.items():
        if key == "$and":
            parts = [alternatives(part, prefix) for part in value]
        elif key == "$or":
            parts = [[branch for part in value for branch in alternatives(part, prefix)]]
        elif key.startswith("$"):
            continue
        else:
            parts = [_field(prefix + key, value)]
        for part in parts:
            combined = [{**a, **b} for a in combined for b in part]
    return combined


def _field(field: str, value: Any) -> list[Bounds]:
    if not isinstance(value, dict) or not any(k.startswith("$") for k in value):
        return [{field: "eq"}]
    if "$elemMatch" in value:
        return alternatives(value["$elemMatch"], field + ".")
    if "$eq" in value or ("$in" in value and len(value["$in"]) == 1):
        return [{field: "eq"}]
    if "$in" in value:
        return [{field: "in"}]
    if any(k in value for k in ("$gt", "$gte", "$lt", "$lte")):
        return [{field: "range"}]
    if "$regex" in value and str(value["$regex"]).startswith("^"):
        return [{field: "range"}]
    return [{}]  # $ne, $not, $exists, an unanchored regex: no bounds


@dataclass(frozen=True)
class Plan:
    index: Index | None
    # The keys the chosen index bounds, and whether its next keys give the sort's order.
    bound: tuple[str, ...]
    sorted: bool = False


def roots(fields: Any) -> set[str]:
    """Top-level fields, an index array standing for its elements' fields."""
    return {field.split(".")[0] for field in fields}


def criteria(bounds: Bounds) -> set[str]:
    """What a query selects by, besides the resource type it always names."""
    return roots(bounds) - {"type", "body"}


def in_order(keys: Sequence[str], sort: Sort) -> bool:
    """Whether index keys read forwards or backwards give this sort: the same fields,
    every direction the same or every one reversed."""
    if not sort or len(keys) < len(sort):
        return False
    fields = [key.removeprefix("-") for key in keys[: len(sort)]]
    directions = [-1 if key.startswith("-") else 1 for key in keys[: len(sort)]]
    if fields != [field for field, _ in sort]:
        return False
    wanted = [direction for _, direction in sort]
    return wanted == directions or wanted == [-d for d in directions]


def plan(bounds: Bounds, sort: Sort, indexes: list[Index]) -> Plan:
    """The index MongoDB's planner would pick: one that bounds one of the query's
    criteria, then the one bounding most keys, then one whose next keys give the sort's
    order (no blocking sort: ESR); with no bounds at all, one whose first keys do."""
    sorted_on = {field for field, _ in sort}

    def pinned(key: str) -> bool:
        """Bound to one value; or to a few (`$in`) that the sort does not name: a scan
        per value, merged in the sort's order (MongoDB's explode for sort)."""
        return bounds[key] == "eq" or (bounds[key] == "in" and key not in sorted_on)

    best, best_rank = Plan(None, ()), (False, 0, False)
    for index in indexes:
        bound: list[str] = []
        for key in index:
            if key.removeprefix("-") not in bounds:
                break
            bound.append(key.removeprefix("-"))
        if not bound:
            continue
        # Past the pinned keys, the index's keys must be the sort's (fields bound to one
        # value are in order already, wherever the sort names them).
        equal = len(list(takewhile(pinned, bound)))
        rest = [(field, d) for field, d in sort if bounds.get(field) != "eq"]
        follows = in_order(index[equal:], rest)
        rank = (bool(roots(bound) & criteria(bounds)), len(bound), follows)
        if rank > best_rank:
            best, best_rank = Plan(index, tuple(bound), follows), rank
    if best.index is None and not bounds and sort:
        for index in indexes:
            if in_order(index, sort):
                return Plan(index, (), True)
    return best


def served(bounds: Bounds, sort: Sort, chosen: Plan) -> bool:
    """The plan starts from one of the query's criteria; a query with none (all of a
    type, or everything) is read in its sort order from an index, not sorted whole."""
    if chosen.index is None:
        return False
    if criteria(bounds):
        return bool(roots(chosen.bound) & criteria(bounds))
    return chosen.sorted or not sort


def shapes(query: list[Any]) -> Iterator[tuple[Bounds, Sort]]:
    _, operation, document, sort = query
    if operation == "aggregate":
        first = document[0].get("$match", {}) if document else {}
        sort_stage = next((s["$sort"] for s in document if "$sort" in s), {})
        # Keys computed for the read (k0, k1, ...) no index can give.
        fields = [(f, d) for f, d in sort_stage.items() if not re.fullmatch(r"k\d+", f)]
        for bounds in alternatives(first):
            yield bounds, fields
        return
    fields = list(sort) if isinstance(sort, list) else []
    for bounds in alternatives(document or {}):
        yield bounds, fields


def indexes_by_collection(declared: Any) -> dict[str, list[Index]]:
    found: dict[str, list[Index]] = {}
    for collection, keys, options in declared:
        if "expireAfterSeconds" in options:
            continue  # the TTL monitor's, not a query's
        found.setdefault(collection, []).append(
            tuple(key if direction == 1 else f"-{key}" for key, direction in keys)
        )
    return found


def problems(queries: list[list[Any]], declared: Any) -> list[str]:
    """What the planner finds wrong: a shape no index serves, a search that does not
    start from one of its parameters, a declared index that serves nothing."""
    indexes = indexes_by_collection(declared)
    used: set[tuple[str, Index]] = set()
    found: list[str] = []
    for query in queries:
        collection, operation = query[0], query[1]
        available = [("_id",), *indexes.get(collection, [])]
        for bounds, sort in shapes(query):
            chosen = plan(bounds, sort, available)
            if chosen.index is not None:
                used.add((collection, chosen.index))
            if not served(bounds, sort, chosen) and (collection, operation) not in SCANS:
                found.append(
                    f"{collection} {operation} is not served (best: {chosen.index}):"
                    f" {query[2]!r} sorted by {sort}"
                )
    for collection, collection_indexes in indexes.items():
        for index in collection_indexes:
            if (collection, index) not in used:
                found.append(f"the index {collection} {index} serves no query")
    return found


def test_every_query_shape_is_served_and_every_index_serves_one(
    workload: list[list[Any]],
) -> None:
    assert len(workload) > 80
    assert problems(workload, INDEXES) == []


# Every declared index but the TTL one (it serves MongoDB's expiry monitor, not a query).
QUERY_INDEXES = [
    n for n, (_, _, options) in enumerate(INDEXES) if "expireAfterSeconds" not in options
]


@pytest.mark.parametrize("dropped", QUERY_INDEXES, ids=lambda n: f"{INDEXES[n][0]}{INDEXES[n][1]}")
def test_dropping_a_declared_index_is_noticed(workload: list[list[Any]], dropped: int) -> None:
    collection, keys, _ = INDEXES[dropped]
    remaining = INDEXES[:dropped] + INDEXES[dropped + 1 :]
    assert problems(workload, remaining), f"nothing noticed {collection} {keys} missing"
