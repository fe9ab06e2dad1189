"""Prefixes (R4 search.html#prefix): every prefix against one known date layout, one
number layout and one quantity layout.

For dates and for numbers without a comparator the search value is a range (its
precision); `eq` means the search range contains the target, `ne` that it does not,
`gt`/`lt` that the target reaches above/below the search range, `ge`/`le` either of
those or `eq`, `sa`/`eb` that the target starts after/ends before the search range,
`ap` that the target overlaps the search value widened by about 10% (for a date, 10% of
its distance from now). For `gt lt ge le sa eb` on numbers the precision is ignored.
Prefixes apply to number, date and quantity only; an unknown prefix is a 400.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import observation as loinc_observation
from tests.search.api.search_helpers import risk, search, search_error, seed, seeded

UCUM = "http://unitsofmeasure.org"


def observation(oid: str, **value: Any) -> dict[str, Any]:
    return loinc_observation("2345-7", id=oid, **value)


# Against the search value 2020-06-15, the range [2020-06-15, 2020-06-16).
DATES = [
    observation("before", effectiveDateTime="2020-06-01"),
    observation("same-day", effectiveDateTime="2020-06-15"),
    observation("within", effectiveDateTime="2020-06-15T12:00:00Z"),
    observation("after", effectiveDateTime="2020-07-01"),
    observation("straddle", effectivePeriod={"start": "2020-06-10", "end": "2020-06-20"}),
    observation("ongoing-before", effectivePeriod={"start": "2020-03-01"}),
    observation("ongoing-after", effectivePeriod={"start": "2020-06-16"}),
    observation("ended-before", effectivePeriod={"end": "2020-06-01"}),
    observation("ancient", effectiveDateTime="2000-01-01"),
    observation("undated"),
]
DATED = {o["id"] for o in DATES} - {"undated"}
dates = seeded(DATES)

DATE_EXPECTED = {
    "eq": {"same-day", "within"},
    "ne": DATED - {"same-day", "within"},
    "gt": {"after", "straddle", "ongoing-before", "ongoing-after"},
    "lt": {"before", "straddle", "ongoing-before", "ended-before", "ancient"},
    "ge": {"same-day", "within", "after", "straddle", "ongoing-before", "ongoing-after"},
    "le": {"before", "same-day", "within", "straddle", "ongoing-before", "ended-before", "ancient"},
    "sa": {"after", "ongoing-after"},
    "eb": {"before", "ended-before", "ancient"},
    # 10% of the years since mid-2020 is months: all of 2020 is near, 2000 is not.
    "ap": DATED - {"ancient"},
}


@pytest.mark.parametrize("prefix", list(DATE_EXPECTED))
async def test_every_prefix_on_dates(dates: httpx.AsyncClient, prefix: str) -> None:
    got = await search(dates, "Observation", {"date": f"{prefix}2020-06-15"})
    assert got == DATE_EXPECTED[prefix]


async def test_no_prefix_is_eq(dates: httpx.AsyncClient) -> None:
    assert await search(dates, "Observation", {"date": "2020-06-15"}) == DATE_EXPECTED["eq"]


# Against the search value 0.5: eq/ne use [0.45, 0.55), the others exactly 0.5.
NUMBERS = [
    risk("n020", probabilityDecimal=0.2),
    risk("n050", probabilityDecimal=0.5),
    risk("n052", probabilityDecimal=0.52),
    risk("n058", probabilityDecimal=0.58),
    risk("n090", probabilityDecimal=0.9),
    risk("range", probabilityRange={"low": {"value": 0.4}, "high": {"value": 0.6}}),
]
numbers = seeded(NUMBERS)
NUMBER_EXPECTED = {
    "eq": {"n050", "n052"},
    "ne": {"n020", "n058", "n090", "range"},
    "gt": {"n052", "n058", "n090", "range"},
    "lt": {"n020", "range"},
    "ge": {"n050", "n052", "n058", "n090", "range"},
    "le": {"n020", "n050", "range"},
    # Wholly above 0.5's range [0.45, 0.55): 0.52 lies within it.
    "sa": {"n058", "n090"},
    "eb": {"n020"},
    "ap": {"n050", "n052", "range"},
}


@pytest.mark.parametrize("prefix", list(NUMBER_EXPECTED))
async def test_every_prefix_on_numbers(numbers: httpx.AsyncClient, prefix: str) -> None:
    got = await search(numbers, "RiskAssessment", {"probability": f"{prefix}0.5"})
    assert got == NUMBER_EXPECTED[prefix]


def quantity(oid: str, value: float, code: str = "mg") -> dict[str, Any]:
    return observation(
        oid, valueQuantity={"value": value, "unit": code, "system": UCUM, "code": code}
    )


# Against 5.4 mg: eq/ne use [5.35, 5.45); ap is 5.4 ± 0.54.
QUANTITIES = [
    quantity("q5.0", 5.0),
    quantity("q5.4", 5.4),
    quantity("q5.42", 5.42),
    quantity("q6.0", 6.0),
    quantity("q5.4-g", 5.4, "g"),
]
quantities = seeded(QUANTITIES)
QUANTITY_EXPECTED = {
    "eq": {"q5.4", "q5.42"},
    "ne": {"q5.0", "q6.0"},
    "gt": {"q5.42", "q6.0"},
    "lt": {"q5.0"},
    "ge": {"q5.4", "q5.42", "q6.0"},
    "le": {"q5.0", "q5.4"},
    # Wholly above 5.4's range [5.35, 5.45): 5.42 lies within it.
    "sa": {"q6.0"},
    "eb": {"q5.0"},
    "ap": {"q5.0", "q5.4", "q5.42"},
}


@pytest.mark.parametrize("prefix", list(QUANTITY_EXPECTED))
async def test_every_prefix_on_quantities(quantities: httpx.AsyncClient, prefix: str) -> None:
    got = await search(quantities, "Observation", {"value-quantity": f"{prefix}5.4|{UCUM}|mg"})
    assert got == QUANTITY_EXPECTED[prefix]


@pytest.mark.parametrize(
    ("resource_type", "name", "value"),
    [
        ("Observation", "date", "xx2020-06-15"),
        ("Observation", "date", "ab2020"),
        ("Observation", "date", "GT2020"),
        ("Observation", "date", "gte2020"),
        ("Observation", "date", "g2020"),
        ("RiskAssessment", "probability", "zz0.5"),
        ("RiskAssessment", "probability", "Gt0.5"),
        ("RiskAssessment", "probability", "gtgt0.5"),
        ("Observation", "value-quantity", f"qq5.4|{UCUM}|mg"),
        ("Observation", "value-quantity", "xx5.4"),
        ("Patient", "birthdate", "before2020"),
        ("Patient", "_lastUpdated", "xx2020"),
    ],
)
async def test_unknown_prefix_is_400(
    client: httpx.AsyncClient, resource_type: str, name: str, value: str
) -> None:
    await search_error(client, resource_type, {name: value})


async def test_prefixes_do_not_apply_to_other_types(client: httpx.AsyncClient) -> None:
    """On string, token and reference values, letters like `gt` are just letters."""
    await seed(
        client,
        [
            {"resourceType": "Patient", "id": "eqbal", "name": [{"family": "Eqbal"}]},
            {"resourceType": "Patient", "id": "ne123", "identifier": [{"value": "ne123"}]},
            {"resourceType": "Patient", "id": "other", "name": [{"family": "Bal"}]},
            observation("obs", subject={"reference": "Patient/gt1"}),
        ],
    )
    assert await search(client, "Patient", {"family": "eqbal"}) == {"eqbal"}
    assert await search(client, "Patient", {"family": "eq"}) == {"eqbal"}
    assert await search(client, "Patient", {"family": "bal"}) == {"other"}
    assert await search(client, "Patient", {"family": "xxbal"}) == set()
    assert await search(client, "Patient", {"identifier": "ne123"}) == {"ne123"}
    assert await search(client, "Patient", {"identifier": "123"}) == set()
    assert await search(client, "Observation", {"subject": "gt1"}) == {"obs"}
