"""Query strings to SearchQuery (R4 search.html#token, #date, #prefix, #escaping,
#combining): what the conditional interactions can ask for, and what they refuse."""

from __future__ import annotations

import pytest

from fhirserver.errors import BadRequest, NotSupported
from fhirserver.search.parse import parse_criteria
from fhirserver.search.query import IdPredicate, LastUpdatedPredicate, TokenPredicate


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
