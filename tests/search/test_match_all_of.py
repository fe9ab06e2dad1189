"""The in-memory matcher on `AllOfPredicate`: an AND of OR-lists nested as one predicate
(R4 search.html#combining, one level down), optionally confined to one resource type, as
SMART authorization adds a token's alternatives to a search (DESIGN.md "Authorization";
SMART App Launch 2.2 scopes-and-launch-context.html, "Finer-grained resource
constraints using search parameters"). Also inside chains (search.html#chaining) and
`_has` (search.html#has)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.errors import NotSupported
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    IdPredicate,
    Predicate,
    ReferencePredicate,
    SearchQuery,
)

Resource = dict[str, Any]
Clauses = tuple[tuple[Predicate, ...], ...]

PATIENT: Resource = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00Z"},
    "name": [{"family": "Müller"}],
    "gender": "female",
    "active": True,
}
LAB: Resource = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [{"coding": [{"code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
    "subject": {"reference": "Patient/p1"},
}


def criteria(resource_type: str, *params: tuple[str, str]) -> Clauses:
    """The AND of OR-lists a query string gives."""
    return parse_search((resource_type,), params, strict=True).clauses


def one_of(*alternatives: Predicate, types: tuple[str, ...] = ("Patient",)) -> SearchQuery:
    """A search whose one OR-list is `alternatives`."""
    return SearchQuery(types, (alternatives,))


def resolve(resource_type: str, resource_id: str) -> Resource | None:
    return PATIENT if (resource_type, resource_id) == ("Patient", "p1") else None


def referrers(source_type: str, param: str, target_type: str, target_id: str) -> list[Resource]:
    if (source_type, param, target_type, target_id) == ("Observation", "subject", "Patient", "p1"):
        return [LAB]
    return []


def test_an_or_of_conjunctions() -> None:
    """Either (male and Müller) or (female and active): the second holds."""
    male_muller = AllOfPredicate(criteria("Patient", ("gender", "male"), ("family", "mül")))
    female_active = AllOfPredicate(criteria("Patient", ("gender", "female"), ("active", "true")))
    assert not matches(one_of(male_muller), PATIENT)
    assert matches(one_of(female_active), PATIENT)
    assert matches(one_of(male_muller, female_active), PATIENT)
    female_inactive = AllOfPredicate(criteria("Patient", ("gender", "female"), ("active", "false")))
    assert not matches(one_of(male_muller, female_inactive), PATIENT)


def test_or_lists_inside_are_ors() -> None:
    either = AllOfPredicate(criteria("Patient", ("gender", "male,female"), ("family", "x,mül")))
    assert matches(one_of(either), PATIENT)


def test_no_clauses_hold_for_every_resource() -> None:
    assert matches(one_of(AllOfPredicate(())), PATIENT)
    assert matches(one_of(AllOfPredicate(()), types=("Observation",)), LAB)


def test_an_empty_or_list_holds_for_none() -> None:
    assert not matches(one_of(AllOfPredicate(((),))), PATIENT)


def test_resource_type_confines_it() -> None:
    """A system search over Patient and Observation: Patients only p1, Observations any."""
    only_p1 = AllOfPredicate(((IdPredicate(("p1",)),),), "Patient")
    any_observation = AllOfPredicate((), "Observation")
    system = one_of(only_p1, any_observation, types=("Patient", "Observation"))
    assert matches(system, PATIENT)
    assert not matches(system, {**PATIENT, "id": "p2"})
    assert matches(system, LAB)
    # No alternative for a third type: it gets nothing, even if searched.
    searched = one_of(only_p1, any_observation, types=("Patient", "Observation", "Encounter"))
    assert not matches(searched, {"resourceType": "Encounter", "id": "e1"})
    # A type's conditions are not checked on another type's resources.
    assert not matches(one_of(AllOfPredicate((), "Patient"), types=("Observation",)), LAB)


def test_nested() -> None:
    """(in p1's compartment) and ((laboratory) or (vital-signs and final))."""
    compartment = AllOfPredicate(((ReferencePredicate("subject", "Patient", "p1"),),))
    lab = AllOfPredicate(criteria("Observation", ("category", "laboratory")))
    vitals = AllOfPredicate(criteria("Observation", ("category", "vital-signs")))
    outer = AllOfPredicate(((compartment,), (lab, vitals)), "Observation")
    assert matches(one_of(outer, types=("Observation",)), LAB)
    other = {**LAB, "category": [{"coding": [{"code": "vital-signs"}]}], "status": "final"}
    assert matches(one_of(outer, types=("Observation",)), other)
    assert not matches(one_of(outer, types=("Observation",)), {**LAB, "subject": None})
    assert not matches(one_of(outer, types=("Observation",)), {**other, "category": []})


@pytest.mark.parametrize(
    ("inner_type", "params", "expected"),
    [
        ("Patient", [("gender", "female"), ("active", "true")], True),
        ("Patient", [("gender", "female"), ("active", "false")], False),
        (None, [("_id", "p1")], True),
        ("Group", [], False),  # the subject is a Patient
    ],
)
def test_inside_a_chain(
    inner_type: str | None, params: list[tuple[str, str]], expected: bool
) -> None:
    inner = AllOfPredicate(criteria("Patient", *params), inner_type)
    chain = ChainPredicate("subject", ("Patient", "Group"), inner)
    assert matches(one_of(chain, types=("Observation",)), LAB, resolve=resolve) is expected


@pytest.mark.parametrize(
    ("inner_type", "params", "expected"),
    [
        ("Observation", [("category", "laboratory"), ("status", "final")], True),
        ("Observation", [("category", "laboratory"), ("status", "amended")], False),
        ("Encounter", [], False),
        (None, [], True),
    ],
)
def test_inside_has(inner_type: str | None, params: list[tuple[str, str]], expected: bool) -> None:
    inner = AllOfPredicate(criteria("Observation", *params), inner_type)
    has = HasPredicate("Observation", "subject", inner)
    assert matches(one_of(has), PATIENT, referrers=referrers) is expected


def test_a_chain_inside_needs_the_referenced_resources() -> None:
    """Refused up front, as a chain at the top level is."""
    chain = ChainPredicate("subject", ("Patient",), IdPredicate(("p1",)))
    nested = AllOfPredicate(((AllOfPredicate(((chain,),)),),))
    with pytest.raises(NotSupported):
        matches(one_of(nested, types=("Observation",)), LAB)
    assert matches(one_of(nested, types=("Observation",)), LAB, resolve=resolve)
