"""FHIR dates as ranges of instants (R4 search.html#date): a value stands for the
whole interval its precision implies, [low, high)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from fhirserver.errors import BadRequest

_DATE = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
# FHIR time zones run from -12:00 to +14:00.
_ZONE_RANGE = (timedelta(hours=-12), timedelta(hours=14))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def date_range(text: str, param: str = "date") -> tuple[datetime, datetime]:
    """The [low, high) range of instants a FHIR date/dateTime/instant value denotes.

    Values without a time zone are taken as UTC.
    """
    match = _DATE.fullmatch(text)
    if match is None:
        raise BadRequest(f"Invalid date {text!r}", expression=param)
    g = match.groupdict()
    tz: timezone = UTC
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        offset = sign * timedelta(hours=int(g["tz"][1:3]), minutes=int(g["tz"][4:6]))
        if not _ZONE_RANGE[0] <= offset <= _ZONE_RANGE[1] or int(g["tz"][4:6]) > 59:
            raise BadRequest(f"Invalid time zone in {text!r}", expression=param)
        tz = timezone(offset)
    try:
        low = datetime(
            int(g["year"]),
            int(g["month"] or 1),
            int(g["day"] or 1),
            int(g["hour"] or 0),
            int(g["minute"] or 0),
            int(g["second"] or 0),
            int((g["fraction"] or ".0")[1:7].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise BadRequest(f"Invalid date {text!r}: {exc}", expression=param) from None
    try:
        return low, _end_of_precision(low, g)
    except (OverflowError, ValueError):
        # The range of a value late in the year 9999 ends past what datetime holds.
        return low, datetime.max.replace(tzinfo=UTC)


def _end_of_precision(low: datetime, g: dict[str, str | None]) -> datetime:
    if g["month"] is None:
        return low.replace(year=low.year + 1)
    if g["day"] is None:
        return low.replace(year=low.year + low.month // 12, month=low.month % 12 + 1)
    if g["hour"] is None:
        return low + timedelta(days=1)
    if g["second"] is None:
        return low + timedelta(minutes=1)
    if g["fraction"] is None:
        return low + timedelta(seconds=1)
    return low + timedelta(microseconds=10 ** (6 - len(g["fraction"][1:7])))


def now_micros() -> int:
    return to_micros(datetime.now(UTC))


def approximate_range(low: int, high: int) -> tuple[int, int]:
    """`ap` (search.html#prefix): the range widened by 10% of its distance from now."""
    margin = abs(now_micros() - low) // 10
    return low - margin, high + margin
