"""`AllOfPredicate` (an AND of OR-lists nested as one predicate) on every backend and in
the in-memory matcher: the shape SMART authorization gives a token's alternatives
(DESIGN.md "Authorization"; R4 search.html#combining for the AND / OR semantics).

For every query the ids each store returns must be exactly the ids the matcher accepts,
and exactly the ids written down here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    Predicate,
    SearchQuery,
)
from fhirserver.storage.base import Store

LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"


def _observation(obs_id: str, patient: str, category: str) -> dict[str, Any]:
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "category": [{"coding": [{"system": system, "code": category}]}],
        "code": {"text": "t"},
        "subject": {"reference": f"Patient/{patient}"},
    }


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "a", "name": [{"family": "Ay"}]},
    {"resourceType": "Patient", "id": "b", "name": [{"family": "Bee"}]},
    _observation("oa-lab", "a", "laboratory"),
    _observation("oa-vital", "a", "vital-signs"),
    _observation("ob-lab", "b", "laboratory"),
    _observation("ob-vital", "b", "vital-signs"),
    {"resourceType": "Condition", "id": "ca", "subject": {"reference": "Patient/a"}},
    {"resourceType": "Condition", "id": "cb", "subject": {"reference": "Patient/b"}},
]


def _clauses(resource_type: str, text: str) -> tuple[tuple[Predicate, ...], ...]:
    pairs = [tuple(pair.split("=", 1)) for pair in text.split("&")] if text else []
    return parse_search((resource_type,), pairs).clauses


def _all_of(resource_type: str | None, text: str, of: str = "Observation") -> AllOfPredicate:
    return AllOfPredicate(
        _clauses(of if resource_type is None else resource_type, text), resource_type
    )


async def _found(store: Store, query: SearchQuery) -> set[str]:
    await _load(store)
    result = await store.search(replace(query, count=100))
    stored = {f"{v.resource_type}/{v.id}" for v in result.matches}
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in RESOURCES}
    oracle = {
        key
        for key, resource in by_key.items()
        if matches(
            query, resource, resolve=lambda t, i: by_key.get(f"{t}/{i}"), referrers=_referrers
        )
    }
    assert stored == oracle
    return stored


def _referrers(source: str, param: str, target_type: str, target_id: str) -> list[dict[str, Any]]:
    query = parse_search((source,), [(param, f"{target_type}/{target_id}")])
    return [r for r in RESOURCES if r["resourceType"] == source and matches(query, r)]


async def _load(store: Store) -> None:
    if await store.count():
        return
    context = WriteContext()
    for resource in RESOURCES:
        await crud.update(store, context, resource["resourceType"], resource["id"], resource)


async def test_an_or_of_two_conjunctions(store: Store) -> None:
    either = (
        _all_of("Observation", f"subject=Patient/a&category={LAB}"),
        _all_of("Observation", "subject=Patient/b&category=vital-signs"),
    )
    query = SearchQuery(("Observation",), clauses=(either,))
    assert await _found(store, query) == {"Observation/oa-lab", "Observation/ob-vital"}


async def test_each_type_of_a_system_search_gets_its_own_conditions(store: Store) -> None:
    per_type = (
        _all_of("Observation", "subject=Patient/a"),
        _all_of("Condition", ""),  # no clauses: every Condition
    )
    query = SearchQuery(("Observation", "Condition", "Patient"), clauses=(per_type,))
    assert await _found(store, query) == {
        "Observation/oa-lab",
        "Observation/oa-vital",
        "Condition/ca",
        "Condition/cb",
    }


async def test_inside_a_chain_and_a_has(store: Store) -> None:
    (chain,) = _clauses("Observation", "subject:Patient.family=Bee")[0]
    assert isinstance(chain, ChainPredicate)
    only_a = AllOfPredicate(((chain.inner,), (_all_of("Patient", "_id=a"),)))
    confined_chain = replace(chain, inner=only_a)
    query = SearchQuery(("Observation",), clauses=((confined_chain,),))
    assert await _found(store, query) == set()
    (has,) = _clauses("Patient", "_has:Observation:subject:category=vital-signs")[0]
    assert isinstance(has, HasPredicate)
    of_b = AllOfPredicate(((has.inner,), (_all_of("Observation", "subject=Patient/b"),)))
    confined_has = replace(has, inner=of_b)
    query = SearchQuery(("Patient",), clauses=((confined_has,),))
    assert await _found(store, query) == {"Patient/b"}


async def test_nested_and_combined_with_sort_and_total(store: Store) -> None:
    inner = AllOfPredicate(((_all_of("Observation", "category=vital-signs"),),))
    outer = AllOfPredicate(((inner,), (_all_of(None, "subject=Patient/a"),)), "Observation")
    query = SearchQuery(("Observation",), clauses=((outer,),), total="accurate")
    assert await _found(store, query) == {"Observation/oa-vital"}
    await _load(store)
    result = await store.search(query)
    assert result.total == 1
