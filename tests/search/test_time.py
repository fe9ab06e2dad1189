"""FHIR dates as ranges (R4 search.html#date): a value stands for the interval its
precision implies; an impossible date is a 400."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fhirserver.errors import BadRequest
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
