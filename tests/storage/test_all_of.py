"""`AllOfPredicate` on every backend (R4 search.html#combining one level down,
#chaining, #has, #sort, #paging, `_total`): the shape SMART authorization gives a search
(DESIGN.md "Authorization"; SMART App Launch 2.2 scopes-and-launch-context.html): an OR
of a token's alternatives, each an AND of the patient compartment
(compartmentdefinition-patient) and a granular restriction such as
`category=laboratory`, per resource type in a system search.

Resources are written through the real write path (`crud.update`), searched with
`store.search` (and `unit.match`, what conditional interactions use), and each answer is
the exact ids expected, which the in-memory matcher must give too."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.search.extract import index_entries
from fhirserver.search.match import matches
from fhirserver.search.params import patient_compartment
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    IdPredicate,
    Predicate,
    ReferenceEntry,
    ReferencePredicate,
    SearchQuery,
)
from fhirserver.storage.base import SearchResult, Store

Resource = dict[str, Any]
Clauses = tuple[tuple[Predicate, ...], ...]
Key = tuple[str, str]


def _patient(pid: str, gender: str, family: str) -> Resource:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "name": [{"family": family}]}


def _observation(oid: str, category: str, status: str, date: str, **refs: str) -> Resource:
    observation: Resource = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [{"coding": [{"code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        "effectiveDateTime": date,
    }
    if "subject" in refs:
        observation["subject"] = {"reference": refs["subject"]}
    if "performer" in refs:
        observation["performer"] = [{"reference": refs["performer"]}]
    return observation


def _condition(cid: str, patient: str) -> Resource:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": patient}}


RESOURCES: list[Resource] = [
    _patient("p1", "female", "Müller"),
    _patient("p2", "male", "Smith"),
    _patient("p3", "female", "Jones"),
    _observation("o1", "laboratory", "final", "2021-01-05", subject="Patient/p1"),
    _observation("o2", "vital-signs", "final", "2021-01-02", subject="Patient/p1"),
    _observation("o3", "laboratory", "final", "2021-01-03", subject="Patient/p2"),
    # In p1's compartment as performer only.
    _observation(
        "o4", "laboratory", "final", "2021-01-01", subject="Patient/p2", performer="Patient/p1"
    ),
    _observation("o5", "laboratory", "amended", "2021-01-04", subject="Patient/p3"),
    _observation("o6", "laboratory", "final", "2021-01-06"),
    _condition("c1", "Patient/p1"),
    _condition("c2", "Patient/p2"),
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/p1"},
    },
]


@dataclass
class Stored:
    """The current resources as stored, for the matcher's chains and `_has`."""

    resources: dict[Key, Resource] = field(default_factory=dict)

    def resolve(self, resource_type: str, resource_id: str) -> Resource | None:
        return self.resources.get((resource_type, resource_id))

    def referrers(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> list[Resource]:
        pointer = ReferenceEntry(param, target_type, target_id, None)
        return [
            resource
            for (resource_type, _), resource in self.resources.items()
            if resource_type == source_type and pointer in index_entries(resource)
        ]

    def matching(self, query: SearchQuery) -> set[str]:
        return {
            resource["id"]
            for resource in self.resources.values()
            if matches(query, resource, resolve=self.resolve, referrers=self.referrers)
        }


@pytest.fixture
async def stored(store: Store) -> Stored:
    written = Stored()
    for resource in RESOURCES:
        result = await crud.update(
            store, WriteContext(), resource["resourceType"], resource["id"], resource
        )
        assert result.version.body is not None
        written.resources[(resource["resourceType"], resource["id"])] = json.loads(
            result.version.body
        )
    return written


def criteria(resource_type: str, *params: tuple[str, str]) -> Clauses:
    return parse_search((resource_type,), params, strict=True).clauses


def compartment(resource_type: str, patient_id: str) -> AllOfPredicate:
    """Inside Patient `patient_id`'s compartment, as DESIGN.md "Authorization" builds it:
    a reference to the patient by one of the type's compartment parameters."""
    membership: list[Predicate] = [
        ReferencePredicate(param, "Patient", patient_id)
        for param in patient_compartment().get(resource_type, ())
        if param != "{def}"
    ]
    if resource_type == "Patient":
        membership.append(IdPredicate((patient_id,)))
    return AllOfPredicate((tuple(membership),), resource_type)


def restricted(base: SearchQuery, *alternatives: Predicate) -> SearchQuery:
    """`base` with one more clause: an OR of `alternatives` (a token's access)."""
    return replace(base, clauses=(*base.clauses, alternatives))


def search(types: tuple[str, ...], *params: tuple[str, str]) -> SearchQuery:
    return parse_search(types, [*params, ("_count", "100")], strict=True)


async def ids(store: Store, stored: Stored, query: SearchQuery) -> set[str]:
    """What the store finds, checked against the matcher."""
    found = {version.id for version in (await store.search(query)).matches}
    assert found == stored.matching(query)
    return found


LAB = AllOfPredicate(criteria("Observation", ("category", "laboratory")))


async def test_an_or_of_two_conjunctions(store: Store, stored: Stored) -> None:
    """(p1's and laboratory) or (p2's and final)."""
    p1_lab = AllOfPredicate(
        criteria("Observation", ("subject", "Patient/p1"), ("category", "laboratory"))
    )
    p2_final = AllOfPredicate(
        criteria("Observation", ("subject", "Patient/p2"), ("status", "final"))
    )
    query = restricted(search(("Observation",)), p1_lab, p2_final)
    assert await ids(store, stored, query) == {"o1", "o3", "o4"}
    # With the query's own criteria as well: an AND around the OR.
    vital = restricted(search(("Observation",), ("category", "vital-signs")), p1_lab, p2_final)
    assert await ids(store, stored, vital) == set()


async def test_compartment_and_a_granular_restriction(store: Store, stored: Stored) -> None:
    """patient/Observation.rs?category=laboratory with p1 in context: subject or
    performer p1, and laboratory."""
    access = AllOfPredicate(((compartment("Observation", "p1"),), (LAB,)), "Observation")
    assert await ids(store, stored, restricted(search(("Observation",)), access)) == {"o1", "o4"}


SYSTEM_TYPES = ("Observation", "Condition", "Encounter")


def system_access() -> tuple[Predicate, ...]:
    """Observations in p1's compartment, any Condition, no Encounter."""
    return (compartment("Observation", "p1"), AllOfPredicate((), "Condition"))


async def test_each_type_of_a_system_search_gets_its_own_conditions(
    store: Store, stored: Stored
) -> None:
    query = restricted(search(SYSTEM_TYPES), *system_access())
    assert await ids(store, stored, query) == {"o1", "o2", "o4", "c1", "c2"}
    # A type's conditions do not reach into another type: a Condition is not an
    # Observation of p1's, and p1's Encounter gets nothing.
    only_observations = restricted(search(SYSTEM_TYPES), compartment("Observation", "p1"))
    assert await ids(store, stored, only_observations) == {"o1", "o2", "o4"}


async def test_no_clauses_hold_for_everything_an_empty_or_list_for_nothing(
    store: Store, stored: Stored
) -> None:
    assert await ids(store, stored, restricted(search(("Patient",)), AllOfPredicate(()))) == {
        "p1",
        "p2",
        "p3",
    }
    nothing = AllOfPredicate(((),))
    assert await ids(store, stored, restricted(search(("Patient",)), nothing)) == set()
    assert await ids(
        store, stored, restricted(search(("Patient",)), nothing, AllOfPredicate((), "Patient"))
    ) == {
        "p1",
        "p2",
        "p3",
    }


async def test_nested(store: Store, stored: Stored) -> None:
    """In p1's compartment, and (laboratory, or vital-signs and final)."""
    vitals = AllOfPredicate(
        criteria("Observation", ("category", "vital-signs"), ("status", "final"))
    )
    outer = AllOfPredicate(
        ((AllOfPredicate(((compartment("Observation", "p1"),),)),), (LAB, vitals)), "Observation"
    )
    assert await ids(store, stored, restricted(search(("Observation",)), outer)) == {
        "o1",
        "o2",
        "o4",
    }


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        # The subject is a female Müller: p1.
        (
            AllOfPredicate(criteria("Patient", ("gender", "female"), ("family", "mül")), "Patient"),
            {"o1", "o2"},
        ),
        # Confined to a type the subjects are not.
        (AllOfPredicate((), "Group"), set()),
        # Either p1 or p3, by the compartment of each.
        (
            AllOfPredicate(((compartment("Patient", "p1"), compartment("Patient", "p3")),)),
            {"o1", "o2", "o5"},
        ),
    ],
)
async def test_inside_a_chain(
    store: Store, stored: Stored, inner: AllOfPredicate, expected: set[str]
) -> None:
    chain = ChainPredicate("subject", ("Patient", "Group"), inner)
    assert await ids(store, stored, restricted(search(("Observation",)), chain)) == expected


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        # Some laboratory Observation, final, has the Patient as subject.
        (
            AllOfPredicate(
                criteria("Observation", ("category", "laboratory"), ("status", "final")),
                "Observation",
            ),
            {"p1", "p2"},
        ),
        (AllOfPredicate(criteria("Observation", ("status", "amended"))), {"p3"}),
        (AllOfPredicate((), "Encounter"), set()),
        (AllOfPredicate(()), {"p1", "p2", "p3"}),
    ],
)
async def test_inside_has(
    store: Store, stored: Stored, inner: AllOfPredicate, expected: set[str]
) -> None:
    has = HasPredicate("Observation", "subject", inner)
    assert await ids(store, stored, restricted(search(("Patient",)), has)) == expected


async def test_with_last_updated_and_a_chain_inside(store: Store, stored: Stored) -> None:
    """Predicates the compilers treat specially at the top (`_lastUpdated` reads the
    searched row itself) behave the same nested."""
    recent = AllOfPredicate(
        criteria("Observation", ("_lastUpdated", "gt2000"), ("subject.gender", "male"))
    )
    assert await ids(store, stored, restricted(search(("Observation",)), recent)) == {"o3", "o4"}


async def _pages(store: Store, query: SearchQuery) -> tuple[list[list[str]], list[int | None]]:
    """Every page, following the next links, and the total each reports."""
    pages: list[list[str]] = []
    totals: list[int | None] = []
    cursor: str | None = None
    while True:
        result: SearchResult = await store.search(replace(query, cursor=cursor))
        pages.append([version.id for version in result.matches])
        totals.append(result.total)
        if result.next_cursor is None:
            return pages, totals
        cursor = result.next_cursor


async def test_sorted_paged_and_counted(store: Store, stored: Stored) -> None:
    """A system search, `_sort=-_id`, two a page, `_total=accurate`: the pages hold the
    allowed resources in order, each page counts them all, and the previous link leads
    back."""
    base = parse_search(
        SYSTEM_TYPES, [("_sort", "-_id"), ("_count", "2"), ("_total", "accurate")], strict=True
    )
    query = restricted(base, *system_access())
    pages, totals = await _pages(store, query)
    assert pages == [["o4", "o2"], ["o1", "c2"], ["c1"]]
    assert totals == [5, 5, 5]
    last = await store.search(query)
    second = await store.search(replace(query, cursor=last.next_cursor))
    assert second.previous_cursor is not None
    back = await store.search(replace(query, cursor=second.previous_cursor))
    assert [version.id for version in back.matches] == ["o4", "o2"]


async def test_sorted_by_a_parameter(store: Store, stored: Stored) -> None:
    """`_sort=date` over the allowed Observations of p1, laboratory or not."""
    base = parse_search(
        ("Observation",), [("_sort", "date"), ("_count", "2"), ("_total", "accurate")], strict=True
    )
    query = restricted(base, compartment("Observation", "p1"))
    pages, totals = await _pages(store, query)
    assert pages == [["o4", "o2"], ["o1"]]
    assert totals == [3, 3]


async def test_conditional_matches(store: Store, stored: Stored) -> None:
    """What conditional interactions search with (`unit.match`) honours it too."""
    query = restricted(
        search(("Observation",)), AllOfPredicate(((compartment("Observation", "p1"),), (LAB,)))
    )
    async with store.unit_of_work() as unit:
        found = await unit.match(query, limit=10)
    assert {version.id for version in found} == {"o1", "o4"}


async def test_an_empty_or_list_at_the_top_holds_for_nothing(store: Store, stored: Stored) -> None:
    """As nested: an alternative-free clause (a token with no access) finds nothing."""
    assert await ids(store, stored, restricted(search(SYSTEM_TYPES))) == set()
