"""URI search (R4 search.html#uri).

Matches are precise and case-sensitive, on the entire URI; `:below` matches URIs that
start with the search value, `:above` URIs that the search value starts with. The
ValueSet `url` parameter is of type uri, as in the search.html examples.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import build, search, search_error, seed, seeded


def value_set(vid: str, url: str | None) -> dict[str, Any]:
    return build("ValueSet", id=vid, status="active", url=url)


VALUE_SETS = [
    value_set("vs-123", "http://acme.org/fhir/ValueSet/123"),
    value_set("vs-124", "http://acme.org/fhir/ValueSet/124"),
    value_set("vs-1234", "http://acme.org/fhir/ValueSet/1234"),
    value_set("vs-lower", "http://acme.org/fhir/valueset/123"),
    value_set("acme-root", "http://acme.org/fhir/"),
    value_set("other", "http://other.org/fhir/ValueSet/123"),
    value_set("oid", "urn:oid:1.2.3.4.5"),
    value_set("no-url", None),
]


value_sets = seeded(VALUE_SETS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://acme.org/fhir/ValueSet/123", {"vs-123"}),
        ("http://acme.org/fhir/valueset/123", {"vs-lower"}),
        ("urn:oid:1.2.3.4.5", {"oid"}),
        ("http://acme.org/fhir/", {"acme-root"}),
        # The entire URI: no prefix, no suffix, case-sensitive.
        ("http://acme.org/fhir/ValueSet/12", set()),
        ("http://acme.org/fhir/ValueSet/123/", set()),
        ("http://acme.org/fhir/VALUESET/123", set()),
        ("http://acme.org/fhir", set()),
        ("urn:oid:1.2.3.4", set()),
        ("acme", set()),
    ],
)
async def test_exact(value_sets: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(value_sets, "ValueSet", {"url": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The search.html example: every URL starting with http://acme.org/fhir/
        (
            "http://acme.org/fhir/",
            {"vs-123", "vs-124", "vs-1234", "vs-lower", "acme-root"},
        ),
        ("http://acme.org/fhir/ValueSet/", {"vs-123", "vs-124", "vs-1234"}),
        ("http://acme.org/fhir/ValueSet/124", {"vs-124"}),
        ("http://other.org/", {"other"}),
        ("http://nowhere.org/", set()),
    ],
)
async def test_below(value_sets: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(value_sets, "ValueSet", {"url:below": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The search.html example: the URL itself and the ones above it.
        ("http://acme.org/fhir/ValueSet/123/_history/5", {"vs-123", "acme-root"}),
        ("http://acme.org/fhir/valueset/123/_history/1", {"vs-lower", "acme-root"}),
        ("http://acme.org/fhir/ValueSet/124", {"vs-124", "acme-root"}),
        ("http://acme.org/fhir/", {"acme-root"}),
        ("http://acme.org/", set()),
        ("http://other.org/fhir/ValueSet/123/x", {"other"}),
    ],
)
async def test_above(value_sets: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(value_sets, "ValueSet", {"url:above": value}) == expected


async def test_comma_is_or(value_sets: httpx.AsyncClient) -> None:
    value = "http://acme.org/fhir/ValueSet/123,http://acme.org/fhir/ValueSet/124"
    assert await search(value_sets, "ValueSet", {"url": value}) == {"vs-123", "vs-124"}
    value = "urn:oid:1.2.3.4.5,http://nowhere.org/x"
    assert await search(value_sets, "ValueSet", {"url": value}) == {"oid"}


async def test_escaped_comma_is_part_of_the_uri(client: httpx.AsyncClient) -> None:
    """search.html#escaping: `url=...124\\,ValueSet/125` is one URI, not two."""
    await seed(
        client,
        [
            value_set("comma", "http://acme.org/fhir/ValueSet/124,ValueSet/125"),
            value_set("vs-124", "http://acme.org/fhir/ValueSet/124"),
        ],
    )
    value = "http://acme.org/fhir/ValueSet/124\\,ValueSet/125"
    assert await search(client, "ValueSet", {"url": value}) == {"comma"}


async def test_repeated_parameter_is_and(value_sets: httpx.AsyncClient) -> None:
    both = [("url:below", "http://acme.org/fhir/"), ("url:below", "http://acme.org/fhir/ValueSet/")]
    assert await search(value_sets, "ValueSet", both) == {"vs-123", "vs-124", "vs-1234"}
    exclusive = [("url", "http://acme.org/fhir/ValueSet/123"), ("url:below", "http://other.org/")]
    assert await search(value_sets, "ValueSet", exclusive) == set()
    mixed = [
        ("url:below", "http://acme.org/fhir/ValueSet/"),
        ("url:above", "http://acme.org/fhir/ValueSet/124/_history/2"),
    ]
    assert await search(value_sets, "ValueSet", mixed) == {"vs-124"}


@pytest.mark.parametrize("modifier", ["exact", "contains", "text", "not", "foo"])
async def test_unknown_modifiers_are_400(value_sets: httpx.AsyncClient, modifier: str) -> None:
    await search_error(value_sets, "ValueSet", {f"url:{modifier}": "http://acme.org/fhir/"})
