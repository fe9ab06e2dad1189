"""Date search (R4 search.html#date, with the prefixes of search.html#prefix).

A date value stands for the range its precision implies (`2021` is the whole year, a
dateTime to the second is that second, an instant is a point); a Period is its own
range, open at a missing end ("a missing lower boundary is less than any actual date,
a missing upper boundary is greater than any actual date"); a Timing is the range of
its events. `eq` means the search range contains the target range; the other prefixes
compare the ranges. Values without a time zone are taken as UTC (README).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import (
    ids,
    observation,
    patient,
    search,
    search_error,
    searchset,
    seed,
    seeded,
)

BIRTHS = [
    patient(id="y1990", birth="1990"),
    patient(id="m1990-06", birth="1990-06"),
    patient(id="d1990-06-15", birth="1990-06-15"),
    patient(id="d1991-01-01", birth="1991-01-01"),
    patient(id="unknown"),
]
births = seeded(BIRTHS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # YYYY
        ("1990", {"y1990", "m1990-06", "d1990-06-15"}),
        ("1991", {"d1991-01-01"}),
        ("1989", set()),
        # YYYY-MM: a year-precision value is not inside one month.
        ("1990-06", {"m1990-06", "d1990-06-15"}),
        ("1990-07", set()),
        # YYYY-MM-DD
        ("1990-06-15", {"d1990-06-15"}),
        ("1990-06-16", set()),
        ("1991-01-01", {"d1991-01-01"}),
        # A dateTime is narrower than any of these dates: none is inside it.
        ("1990-06-15T00:00:00Z", set()),
        ("1990-06-15T10:00Z", set()),
    ],
)
async def test_precision_of_search_value_against_date(
    births: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(births, "Patient", {"birthdate": value}) == expected


def effective(oid: str, **value: Any) -> dict[str, Any]:
    return observation("29463-7", id=oid, **value)


# Observation.effective[x]: dateTime, instant, Period and Timing behind one `date`.
EFFECTIVE = [
    effective("dt", effectiveDateTime="2021-03-10T10:30:00Z"),
    # 2021-03-11T04:30:00Z
    effective("dt-zone", effectiveDateTime="2021-03-10T23:30:00-05:00"),
    effective("dt-day", effectiveDateTime="2021-03-10"),
    effective("dt-month", effectiveDateTime="2021-03"),
    effective("instant", effectiveInstant="2021-03-10T10:30:00.123Z"),
    effective("period", effectivePeriod={"start": "2021-03-01", "end": "2021-03-31"}),
    effective("open", effectivePeriod={"start": "2021-03-20T08:00:00Z"}),
    effective(
        "timing",
        effectiveTiming={"event": ["2021-03-05T09:00:00Z", "2021-03-07T09:00:00Z"]},
    ),
    effective("old", effectiveDateTime="2000-01-01T00:00:00Z"),
    effective("none"),
]
WITH_VALUE = {o["id"] for o in EFFECTIVE} - {"none"}


observations = seeded(EFFECTIVE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Every 2021 value inside 2021, but not the period that never ends.
        ("2021", WITH_VALUE - {"open", "old"}),
        ("2021-03", WITH_VALUE - {"open", "old"}),
        ("2021-03-10", {"dt", "dt-day", "instant"}),
        # 23:30 at -05:00 is the 11th in UTC.
        ("2021-03-11", {"dt-zone"}),
        ("2021-03-05", set()),
        # dateTime to the minute and to the second.
        ("2021-03-10T10:30Z", {"dt", "instant"}),
        ("2021-03-10T10:30:00Z", {"dt", "instant"}),
        ("2021-03-10T10:31:00Z", set()),
        # The same instant written in another zone.
        ("2021-03-10T12:30:00+02:00", {"dt", "instant"}),
        ("2021-03-10T05:30:00-05:00", {"dt", "instant"}),
        ("2021-03-10T23:30:00-05:00", {"dt-zone"}),
        ("2021-03-11T04:30:00Z", {"dt-zone"}),
        ("2021-03-10T23:30:00Z", set()),
        # No zone: UTC.
        ("2021-03-10T10:30:00", {"dt", "instant"}),
        # Fractional seconds: only the instant is inside that millisecond.
        ("2021-03-10T10:30:00.123Z", {"instant"}),
        ("2021-03-10T10:30:00.124Z", set()),
        ("2000", {"old"}),
    ],
)
async def test_eq_against_datetime_instant_period_and_timing(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"date": value}) == expected
    assert await search(observations, "Observation", {"date": f"eq{value}"}) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eq", {"dt", "dt-day", "instant"}),
        ("ne", {"dt-zone", "dt-month", "period", "open", "timing", "old"}),
        ("gt", {"dt-zone", "dt-month", "period", "open"}),
        ("lt", {"dt-month", "period", "timing", "old"}),
        ("ge", {"dt", "dt-zone", "dt-day", "dt-month", "instant", "period", "open"}),
        ("le", {"dt", "dt-day", "dt-month", "instant", "period", "timing", "old"}),
        ("sa", {"dt-zone", "open"}),
        ("eb", {"timing", "old"}),
        # Within 10% of the gap between now and 2021-03-10: every 2021 value, not 2000.
        ("ap", WITH_VALUE - {"old"}),
    ],
)
async def test_prefixes_against_a_day(
    observations: httpx.AsyncClient, prefix: str, expected: set[str]
) -> None:
    """The search value 2021-03-10 is the range [2021-03-10, 2021-03-11)."""
    got = await search(observations, "Observation", {"date": f"{prefix}2021-03-10"})
    assert got == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 2021-03-11T04:00:00Z to the second.
        ("gt2021-03-10T23:00:00-05:00", {"dt-zone", "dt-month", "period", "open"}),
        ("lt2021-03-10T23:00:00-05:00", WITH_VALUE - {"dt-zone", "open"}),
        ("sa2021-03-10T23:00:00-05:00", {"dt-zone", "open"}),
        ("eb2021-03-10T10:30:00Z", {"timing", "old"}),
        ("ge2021-03-10T10:30:00Z", WITH_VALUE - {"timing", "old"}),
        ("le2021-03-10T10:30:00Z", WITH_VALUE - {"dt-zone", "open"}),
    ],
)
async def test_prefixes_with_a_datetime_and_zone(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"date": value}) == expected


ENCOUNTERS = [
    {
        "resourceType": "Encounter",
        "id": "january",
        "status": "finished",
        "class": {"code": "AMB"},
        "period": {"start": "2021-01-01", "end": "2021-01-31"},
    },
    {
        "resourceType": "Encounter",
        "id": "ongoing",
        "status": "in-progress",
        "class": {"code": "IMP"},
        "period": {"start": "2021-01-15"},
    },
    {
        "resourceType": "Encounter",
        "id": "end-only",
        "status": "finished",
        "class": {"code": "AMB"},
        "period": {"end": "2021-01-10"},
    },
    {"resourceType": "Encounter", "id": "undated", "status": "planned", "class": {"code": "AMB"}},
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-01", {"january"}),
        ("2021-01-15", set()),
        ("2021", {"january"}),
        # Open ends: the ongoing period is greater than any date...
        ("gt2030", {"ongoing"}),
        ("ge2021-02-01", {"ongoing"}),
        ("sa2021-01-12", {"ongoing"}),
        # ...and the one with no start less than any.
        ("lt1900", {"end-only"}),
        ("le2021-01-05", {"january", "end-only"}),
        ("eb2021-01-12", {"end-only"}),
        ("lt2021-01-15", {"january", "end-only"}),
        ("gt2021-01-15", {"january", "ongoing"}),
        ("ne2021-01", {"ongoing", "end-only"}),
    ],
)
async def test_period_with_open_ends(
    client: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    await seed(client, ENCOUNTERS)
    assert await search(client, "Encounter", {"date": value}) == expected


async def test_comma_is_or(observations: httpx.AsyncClient) -> None:
    got = await search(observations, "Observation", {"date": "2021-03-10,2021-03-11"})
    assert got == {"dt", "dt-day", "instant", "dt-zone"}
    got = await search(observations, "Observation", {"date": "eb2020,sa2021-03-11"})
    assert got == {"old", "open"}


async def test_repeated_parameter_is_and(observations: httpx.AsyncClient) -> None:
    """The search.html idiom for an interval: date=ge...&date=le..."""
    within = [("date", "ge2021-03-01"), ("date", "lt2021-03-08")]
    assert await search(observations, "Observation", within) == {"dt-month", "period", "timing"}
    between = [("date", "ge2021-03-10"), ("date", "le2021-03-10")]
    assert await search(observations, "Observation", between) == (
        WITH_VALUE - {"timing", "old", "dt-zone", "open"}
    )
    disjoint = [("date", "eb2020"), ("date", "sa2021")]
    assert await search(observations, "Observation", disjoint) == set()


async def test_date_parameter_on_a_plain_date_with_prefixes(births: httpx.AsyncClient) -> None:
    for value, expected in (
        ("lt1990-06-15", {"y1990", "m1990-06"}),
        ("gt1990-06-15", {"y1990", "m1990-06", "d1991-01-01"}),
        ("sa1990", {"d1991-01-01"}),
        ("eb1991", {"y1990", "m1990-06", "d1990-06-15"}),
        ("ne1990", {"d1991-01-01"}),
    ):
        assert await search(births, "Patient", {"birthdate": value}) == expected, value


@pytest.mark.parametrize(
    "value",
    [
        "2020-13",
        "2020-00",
        "2020-02-30",
        "2021-02-29",
        "2020-1-1",
        "20200101",
        "20",
        "2020-01-01T10",
        "2020-01-01T25:00Z",
        "2020-01-01T10:60Z",
        "2020-01-01T10:00:00+15:00",
        "2020-01-01 10:00",
        "yesterday",
        "ge",
        "gt2020-13",
        "2020-01-01T10:00:00Zjunk",
    ],
)
async def test_malformed_date_is_400(observations: httpx.AsyncClient, value: str) -> None:
    outcome = await search_error(observations, "Observation", {"date": value})
    assert outcome["issue"][0]["code"] in ("invalid", "value", "processing")


async def test_percent_encoded_colons(observations: httpx.AsyncClient) -> None:
    """search.html#date: "Some user agents may escape the : characters in the URL, and
    servers SHALL handle this correctly"."""
    answer = await observations.get("/Observation?date=2021-03-10T10%3A30%3A00Z")
    assert set(ids(searchset(answer))) == {"dt", "instant"}
    answer = await observations.get("/Observation?date=ge2021-03-10T23%3A30%3A00%2B02%3A00")
    assert set(ids(searchset(answer))) == WITH_VALUE - {"timing", "old", "dt", "instant"}
