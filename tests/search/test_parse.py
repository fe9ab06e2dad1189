"""Query strings to SearchQuery (R4 search.html#token, #date, #prefix, #escaping,
#combining): what the conditional interactions can ask for, and what they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhirserver.errors import BadRequest, NotSupported
from fhirserver.search.parse import parse_criteria
from fhirserver.search.query import IdPredicate, LastUpdatedPredicate, TokenPredicate
from fhirserver.search.time import date_range


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        ("2024-12", datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)),
        ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
        (
            "2024-02-29T10:30",
            datetime(2024, 2, 29, 10, 30, tzinfo=UTC),
            datetime(2024, 2, 29, 10, 31, tzinfo=UTC),
        ),
        (
            "2024-02-29T10:30:15Z",
            datetime(2024, 2, 29, 10, 30, 15, tzinfo=UTC),
            datetime(2024, 2, 29, 10, 30, 16, tzinfo=UTC),
        ),
        (
            "2024-02-29T10:30:15.25+02:00",
            datetime(2024, 2, 29, 10, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2))),
            datetime(2024, 2, 29, 10, 30, 15, 260000, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_date_precision_is_a_range(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text", ["2024-13", "2023-02-29", "24", "2024-1-1", "yesterday", "2024-01-01T25:00"]
)
def test_bad_dates_are_400(text: str) -> None:
    with pytest.raises(BadRequest):
        date_range(text)


def test_prefixes() -> None:
    query = parse_criteria("Patient", [("_lastUpdated", "ge2024"), ("_lastUpdated", "lt2025-06")])
    prefixes = [p.prefix for (p,) in query.clauses if isinstance(p, LastUpdatedPredicate)]
    assert prefixes == ["ge", "lt"]
    with pytest.raises(BadRequest):
        parse_criteria("Patient", [("_lastUpdated", "xx2024")])


def test_tokens_and_escaping() -> None:
    query = parse_criteria("Patient", [("identifier", r"urn:a|x\|y,|z,w,s|")])
    assert query.clauses == (
        (
            TokenPredicate("identifier", "urn:a", "x|y"),
            TokenPredicate("identifier", "", "z"),
            TokenPredicate("identifier", None, "w"),
            TokenPredicate("identifier", "s", None),
        ),
    )
    escaped_comma = parse_criteria("Patient", [("_id", r"a\,b")])
    assert escaped_comma.clauses == ((IdPredicate(("a,b",)),),)


def test_repeats_are_and() -> None:
    query = parse_criteria("Observation", [("identifier", "a"), ("identifier", "b")])
    assert len(query.clauses) == 2


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("Patient", [("nonsense", "Doe")]),
        ("Patient", [("identifier:in", "http://vs")]),
        ("Binary", [("identifier", "x")]),  # Binary has no identifier parameter
        ("Location", [("near", "1|2|3|km")]),
    ],
)
def test_unsupported_parameters_are_refused(
    resource_type: str, params: list[tuple[str, str]]
) -> None:
    with pytest.raises(NotSupported):
        parse_criteria(resource_type, params)


def test_empty_criteria_are_refused() -> None:
    with pytest.raises(BadRequest):
        parse_criteria("Patient", [])
    with pytest.raises(BadRequest):
        parse_criteria("Patient", [("identifier", "a,,b")])
