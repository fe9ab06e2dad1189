"""Query string -> SearchQuery (R4 search.html).

Comma means OR, a repeated parameter means AND. Until full search lands, the
parameters understood are `_id`, `identifier` (token) and `_lastUpdated` (date);
anything else is refused with 400 rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone

from fhirserver.errors import BadRequest, NotSupported
from fhirserver.search.extract import INDEXED_TOKENS
from fhirserver.search.params import registry
from fhirserver.search.query import (
    ID,
    LAST_UPDATED,
    DatePredicate,
    Predicate,
    SearchQuery,
    TokenPredicate,
)

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
_DATE = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)
# search.html: a server may refuse a query too costly to run; this bounds the SQL too.
MAX_PREDICATES = 100
# FHIR time zones run from -12:00 to +14:00.
_ZONE_RANGE = (timedelta(hours=-12), timedelta(hours=14))


def parse_query(resource_type: str, params: Iterable[tuple[str, str]]) -> SearchQuery:
    clauses = []
    for name, value in params:
        if ":" in name:
            raise NotSupported(f"Search modifiers are not supported yet: {name!r}", expression=name)
        clauses.append(tuple(_predicate(resource_type, name, v) for v in split_or(value)))
        if sum(map(len, clauses)) > MAX_PREDICATES:
            raise BadRequest(f"Too many search criteria: at most {MAX_PREDICATES} values")
    if not clauses:
        raise BadRequest("A search with no criteria was given where criteria are required")
    return SearchQuery(resource_type, tuple(clauses))


def split_or(value: str) -> list[str]:
    """Split on unescaped commas; `\\,` is a literal comma (search.html#escaping)."""
    parts = [p.replace("\x00", ",") for p in value.replace("\\,", "\x00").split(",")]
    if any(p == "" for p in parts):
        raise BadRequest(f"Empty value in search value {value!r}")
    return parts


def _predicate(resource_type: str, name: str, value: str) -> Predicate:
    if name == ID:
        return TokenPredicate(ID, None, value)
    if name == LAST_UPDATED:
        return parse_date(LAST_UPDATED, value)
    if name in INDEXED_TOKENS and registry().get(resource_type, name) is not None:
        return parse_token(name, value)
    raise NotSupported(
        f"Search parameter {name!r} is not supported on {resource_type} yet", expression=name
    )


def parse_token(param: str, value: str) -> TokenPredicate:
    parts = value.replace("\\|", "\x00").split("|")
    if len(parts) > 2:
        raise BadRequest(f"Invalid token {value!r}: at most one '|' expected", expression=param)
    parts = [p.replace("\x00", "|").replace("\\\\", "\\") for p in parts]
    if len(parts) == 1:
        return TokenPredicate(param, None, parts[0])
    system, code = parts
    return TokenPredicate(param, system, code or None)


def parse_date(param: str, value: str) -> DatePredicate:
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    if prefix == "ap":
        raise NotSupported("The 'ap' date prefix is not supported yet", expression=param)
    if prefix not in DATE_PREFIXES:
        raise BadRequest(f"Unknown search prefix {prefix!r} in {value!r}", expression=param)
    low, high = date_range(text, param)
    return DatePredicate(param, prefix, low, high)


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
