"""Composite search (R4 search.html#composite).

A composite value joins one value per component with `$`; all components must match
within the same element (the same Observation for code-value-quantity, the same
Observation.component for component-code-value-quantity). Comma is still OR between
whole composite values, a repeated parameter still AND. Modifiers do not apply.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import observation, search, search_error, seed, seeded

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
POTASSIUM = "2823-3"
SODIUM = "2951-2"
SYSTOLIC = "8480-6"
DIASTOLIC = "8462-4"


def mmol(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}


def mmhg(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def lab(oid: str, code: str, value: float) -> dict[str, Any]:
    return observation(code, id=oid, valueQuantity=mmol(value))


def blood_pressure(oid: str, systolic: float, diastolic: float) -> dict[str, Any]:
    return observation(
        "85354-9",
        id=oid,
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": SYSTOLIC}]},
                "valueQuantity": mmhg(systolic),
            },
            {
                "code": {"coding": [{"system": LOINC, "code": DIASTOLIC}]},
                "valueQuantity": mmhg(diastolic),
            },
        ],
    )


OBSERVATIONS = [
    lab("k-high", POTASSIUM, 6.0),
    lab("k-low", POTASSIUM, 3.0),
    lab("na", SODIUM, 140),
    blood_pressure("bp-high", 150, 95),
    blood_pressure("bp-normal", 110, 70),
    # Implausible, but it separates "one component matches both" from "some component
    # matches each": the diastolic, not the systolic, is over 120.
    blood_pressure("bp-swapped", 90, 130),
]


observations = seeded(OBSERVATIONS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The search.html example: potassium over 5.4 mmol/L (UCUM).
        (f"{LOINC}|{POTASSIUM}$gt5.4|{UCUM}|mmol/L", {"k-high"}),
        (f"{LOINC}|{POTASSIUM}$lt5", {"k-low"}),
        (f"{POTASSIUM}$6", {"k-high"}),
        (f"{LOINC}|{POTASSIUM}$gt1", {"k-high", "k-low"}),
        (f"{LOINC}|{SODIUM}$gt5.4", {"na"}),
        (f"{LOINC}|{SODIUM}$lt100", set()),
        # Code and value must belong together: no potassium is 140.
        (f"{LOINC}|{POTASSIUM}$140", set()),
        (f"{LOINC}|{POTASSIUM}$6|{UCUM}|mg", set()),
        (f"http://snomed.info/sct|{POTASSIUM}$6", set()),
    ],
)
async def test_code_value_quantity(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"code-value-quantity": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The search.html example: systolic under 60 (here: under 100).
        (f"{LOINC}|{SYSTOLIC}$lt100", {"bp-swapped"}),
        (f"{LOINC}|{SYSTOLIC}$gt120", {"bp-high"}),
        (f"{LOINC}|{DIASTOLIC}$gt120", {"bp-swapped"}),
        (f"{LOINC}|{DIASTOLIC}$lt80", {"bp-normal"}),
        (f"{LOINC}|{SYSTOLIC}$110|{UCUM}|mm[Hg]", {"bp-normal"}),
        (f"{LOINC}|{SYSTOLIC}$gt200", set()),
    ],
)
async def test_component_code_value_quantity(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    got = await search(observations, "Observation", {"component-code-value-quantity": value})
    assert got == expected


async def test_components_pair_within_one_element(observations: httpx.AsyncClient) -> None:
    """Two separate parameters match on any component each; the composite on one."""
    separate = [("component-code", f"{LOINC}|{SYSTOLIC}"), ("component-value-quantity", "gt120")]
    assert await search(observations, "Observation", separate) == {"bp-high", "bp-swapped"}
    composite = {"component-code-value-quantity": f"{LOINC}|{SYSTOLIC}$gt120"}
    assert await search(observations, "Observation", composite) == {"bp-high"}


async def test_comma_is_or(observations: httpx.AsyncClient) -> None:
    value = f"{LOINC}|{POTASSIUM}$gt5,{LOINC}|{SODIUM}$lt100"
    assert await search(observations, "Observation", {"code-value-quantity": value}) == {"k-high"}
    value = f"{LOINC}|{POTASSIUM}$lt5,{LOINC}|{SODIUM}$gt100"
    got = await search(observations, "Observation", {"code-value-quantity": value})
    assert got == {"k-low", "na"}


async def test_repeated_parameter_is_and(observations: httpx.AsyncClient) -> None:
    both = [
        ("component-code-value-quantity", f"{LOINC}|{SYSTOLIC}$gt120"),
        ("component-code-value-quantity", f"{LOINC}|{DIASTOLIC}$gt90"),
    ]
    assert await search(observations, "Observation", both) == {"bp-high"}
    contradictory = [
        ("component-code-value-quantity", f"{LOINC}|{SYSTOLIC}$gt120"),
        ("component-code-value-quantity", f"{LOINC}|{DIASTOLIC}$lt80"),
    ]
    assert await search(observations, "Observation", contradictory) == set()


async def test_code_value_concept(client: httpx.AsyncClient) -> None:
    """A composite of two tokens: Observation code-value-concept."""
    snomed = "http://snomed.info/sct"

    def coded(oid: str, code: str, value: str) -> dict[str, Any]:
        concept = {"coding": [{"system": snomed, "code": value}]}
        return observation(code, id=oid, valueCodeableConcept=concept)

    await seed(
        client,
        [
            coded("abo-a", "883-9", "112144000"),
            coded("abo-b", "883-9", "112149005"),
            coded("rh-a", "10331-7", "112144000"),
        ],
    )
    got = await search(
        client, "Observation", {"code-value-concept": f"{LOINC}|883-9${snomed}|112144000"}
    )
    assert got == {"abo-a"}
    got = await search(
        client, "Observation", {"code-value-concept": "883-9$112149005,10331-7$112144000"}
    )
    assert got == {"abo-b", "rh-a"}
    got = await search(client, "Observation", {"code-value-concept": "10331-7$112149005"})
    assert got == set()


@pytest.mark.parametrize(
    "params",
    [
        # One component where two are defined, or three.
        {"code-value-quantity": f"{LOINC}|{POTASSIUM}"},
        {"code-value-quantity": f"{LOINC}|{POTASSIUM}$6$7"},
        # A component that is not a valid value of its type.
        {"code-value-quantity": f"{LOINC}|{POTASSIUM}$abc"},
        {"code-value-quantity": f"{LOINC}|{POTASSIUM}$xx6"},
        # Modifiers are not used on composite parameters.
        {"code-value-quantity:missing2": f"{LOINC}|{POTASSIUM}$6"},
        {"code-value-quantity:exact": f"{LOINC}|{POTASSIUM}$6"},
    ],
)
async def test_malformed_composites_are_400(
    observations: httpx.AsyncClient, params: dict[str, str]
) -> None:
    await search_error(observations, "Observation", params)
