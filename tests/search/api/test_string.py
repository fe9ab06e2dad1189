"""String search (R4 search.html#string).

Default matching is case- and accent-insensitive and matches a value that equals or
starts with the search value; `:exact` matches the whole value, case and accents
included; `:contains` matches anywhere. On HumanName and Address the search covers the
string parts (family, given, prefix, suffix, text; line, city, district, state,
postalCode, country, text), not `use` or `period`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import build, search, seed, seeded


def patient(pid: str, *names: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return build("Patient", id=pid, **extra, name=list(names) or None)


NAMES = [
    patient("eve", {"use": "official", "family": "Smith", "given": ["Eve"]}),
    patient("evelyn", {"family": "Jones", "given": ["Evelyn", "Mary"], "prefix": ["Dr"]}),
    patient("eve-upper", {"family": "Brown", "given": ["EVE"]}),
    patient("severine", {"family": "Dupont", "given": ["Séverine"]}),
    patient("muller", {"family": "Müller", "given": ["Hans"], "suffix": ["Jr"]}),
    patient("text-only", {"text": "John Quincy Adams"}),
    patient("compound", {"family": "Carreno Quinones", "given": ["Maria"]}),
    patient("comma", {"family": "Doe, Jr", "given": ["Jane"]}),
    patient("nameless", gender="unknown"),
]


names = seeded(NAMES)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Equals or starts with, case-insensitive.
        ({"given": "eve"}, {"eve", "evelyn", "eve-upper"}),
        ({"given": "Eve"}, {"eve", "evelyn", "eve-upper"}),
        ({"given": "EVELYN"}, {"evelyn"}),
        ({"family": "smith"}, {"eve"}),
        ({"family": "SMI"}, {"eve"}),
        # Not a match in the middle of a value.
        ({"family": "mith"}, set()),
        ({"given": "verine"}, set()),
        # A search value longer than the stored value does not match.
        ({"family": "Smithson"}, set()),
    ],
)
async def test_default_is_case_insensitive_starts_with(
    names: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(names, "Patient", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Accents in the data are ignored...
        ({"family": "muller"}, {"muller"}),
        ({"given": "severine"}, {"severine"}),
        ({"given": "SEVERINE"}, {"severine"}),
        # ...and so are accents in the search value.
        ({"family": "Müller"}, {"muller"}),
        ({"family": "MÜLL"}, {"muller"}),
        ({"given": "Évelyn"}, {"evelyn"}),
        ({"given": "sév"}, {"severine"}),
    ],
)
async def test_default_is_accent_insensitive(
    names: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(names, "Patient", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # family and given search their own part only.
        ({"family": "jones"}, {"evelyn"}),
        ({"family": "eve"}, set()),
        ({"given": "smith"}, set()),
        ({"given": "mary"}, {"evelyn"}),
        ({"family": "john"}, set()),
        # name covers family, given (every one), prefix, suffix and text.
        ({"name": "jones"}, {"evelyn"}),
        ({"name": "mary"}, {"evelyn"}),
        ({"name": "dr"}, {"evelyn"}),
        # "Jr" is Müller's suffix, and a part of the family name "Doe, Jr", whose
        # parts are searched one by one (search.html#string).
        ({"name": "jr"}, {"muller", "comma"}),
        ({"name": "john"}, {"text-only"}),
        ({"name": "John Quincy"}, {"text-only"}),
        ({"name": "eve"}, {"eve", "evelyn", "eve-upper"}),
        # ...but not the HumanName's use.
        ({"name": "official"}, set()),
    ],
)
async def test_human_name_parts(
    names: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(names, "Patient", params) == expected


async def test_family_name_parts_are_searched_independently(names: httpx.AsyncClient) -> None:
    """search.html#string: "servers should search the parts of a family name independently.
    E.g. searching either "Carreno" or "Quinones" should match a family name of
    "Carreno Quinones"."""
    assert await search(names, "Patient", {"family": "carreno"}) == {"compound"}
    assert await search(names, "Patient", {"family": "quinones"}) == {"compound"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"given:exact": "Eve"}, {"eve"}),
        ({"given:exact": "EVE"}, {"eve-upper"}),
        # Case matters, the whole value must match.
        ({"given:exact": "eve"}, set()),
        ({"given:exact": "Ev"}, set()),
        ({"given:exact": "Evelyn"}, {"evelyn"}),
        # Accents matter.
        ({"family:exact": "Müller"}, {"muller"}),
        ({"family:exact": "Muller"}, set()),
        ({"given:exact": "Severine"}, set()),
        ({"given:exact": "Séverine"}, {"severine"}),
        ({"name:exact": "John Quincy Adams"}, {"text-only"}),
        ({"name:exact": "John Quincy"}, set()),
    ],
)
async def test_exact(names: httpx.AsyncClient, params: dict[str, str], expected: set[str]) -> None:
    assert await search(names, "Patient", params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # The search.html example: given:contains=eve includes Eve, Evelyn and Severine.
        ({"given:contains": "eve"}, {"eve", "evelyn", "eve-upper", "severine"}),
        ({"given:contains": "LYN"}, {"evelyn"}),
        ({"family:contains": "ULL"}, {"muller"}),
        ({"family:contains": "üll"}, {"muller"}),
        ({"name:contains": "quincy"}, {"text-only"}),
        ({"family:contains": "xyz"}, set()),
        # Characters that are wildcards in SQL LIKE are literal here.
        ({"family:contains": "%"}, set()),
        ({"family:contains": "_"}, set()),
    ],
)
async def test_contains(
    names: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(names, "Patient", params) == expected


async def test_comma_is_or(names: httpx.AsyncClient) -> None:
    assert await search(names, "Patient", {"given": "hans,mary"}) == {"muller", "evelyn"}
    assert await search(names, "Patient", {"family": "smith,nobody"}) == {"eve"}
    assert await search(names, "Patient", {"given:exact": "Eve,EVE"}) == {"eve", "eve-upper"}


async def test_repeated_parameter_is_and(names: httpx.AsyncClient) -> None:
    both = [("given", "evelyn"), ("given", "mary")]
    assert await search(names, "Patient", both) == {"evelyn"}
    assert await search(names, "Patient", [("given", "evelyn"), ("given", "hans")]) == set()
    # AND across different parameters.
    assert await search(names, "Patient", [("family", "jones"), ("given", "mary")]) == {"evelyn"}
    assert await search(names, "Patient", [("family", "smith"), ("given", "mary")]) == set()
    # AND and OR combined: (eve or hans) and (smith or müller).
    mixed = [("given", "eve,hans"), ("family", "smith,muller")]
    assert await search(names, "Patient", mixed) == {"eve", "muller"}


async def test_escaped_comma_is_part_of_the_value(names: httpx.AsyncClient) -> None:
    """search.html#escaping: `\\,` is a literal comma, not an OR."""
    assert await search(names, "Patient", {"family": "doe\\, jr"}) == {"comma"}
    assert await search(names, "Patient", {"family:exact": "Doe\\, Jr"}) == {"comma"}
    # Unescaped, the comma splits the value: "doe" OR " jr"
    assert await search(names, "Patient", {"family": "doe,smith"}) == {"comma", "eve"}


ADDRESSES = [
    {
        "resourceType": "Patient",
        "id": "paris",
        "address": [
            {
                "use": "home",
                "line": ["12 Rue de la Paix", "Bâtiment B"],
                "city": "Paris",
                "postalCode": "75002",
                "country": "France",
            }
        ],
    },
    {
        "resourceType": "Patient",
        "id": "springfield",
        "address": [
            {
                "use": "work",
                "line": ["1 Main St"],
                "city": "Springfield",
                "district": "Sangamon",
                "state": "IL",
                "postalCode": "62701",
                "country": "USA",
            }
        ],
    },
    {
        "resourceType": "Patient",
        "id": "london",
        "address": [{"text": "221B Baker Street, London", "city": "London", "country": "UK"}],
    },
    {"resourceType": "Patient", "id": "homeless", "name": [{"family": "Paris"}]},
]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # address covers every string part.
        ({"address": "paris"}, {"paris"}),
        ({"address": "12 rue"}, {"paris"}),
        ({"address": "batiment"}, {"paris"}),
        ({"address": "springfield"}, {"springfield"}),
        ({"address": "sangamon"}, {"springfield"}),
        ({"address": "il"}, {"springfield"}),
        ({"address": "6270"}, {"springfield"}),
        ({"address": "usa"}, {"springfield"}),
        ({"address": "221b"}, {"london"}),
        ({"address": "LOND"}, {"london"}),
        # ...but not use.
        ({"address": "home"}, set()),
        ({"address": "work"}, set()),
        # The part parameters search their part only.
        ({"address-city": "paris"}, {"paris"}),
        ({"address-city": "france"}, set()),
        ({"address-city": "lon"}, {"london"}),
        ({"address-postalcode": "75"}, {"paris"}),
        ({"address-postalcode": "paris"}, set()),
        ({"address-country": "fra"}, {"paris"}),
        ({"address-country": "paris"}, set()),
        ({"address-state": "il"}, {"springfield"}),
        ({"address-state": "springfield"}, set()),
        ({"address:exact": "Paris"}, {"paris"}),
        ({"address:exact": "paris"}, set()),
        ({"address:contains": "baker"}, {"london"}),
        ({"address-city": "paris,london"}, {"paris", "london"}),
    ],
)
async def test_address_parts(
    client: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    await seed(client, ADDRESSES)
    assert await search(client, "Patient", params) == expected


async def test_string_on_a_plain_string_element(client: httpx.AsyncClient) -> None:
    """A string parameter over a plain string: Organization.name."""
    await seed(
        client,
        [
            {"resourceType": "Organization", "id": "acme", "name": "Acme Health Inc."},
            {"resourceType": "Organization", "id": "zenith", "name": "Zénith Clinic"},
            # Without a name, so with an identifier (org-1 asks for one of them).
            {"resourceType": "Organization", "id": "unnamed", "identifier": [{"value": "u"}]},
        ],
    )
    assert await search(client, "Organization", {"name": "acme"}) == {"acme"}
    assert await search(client, "Organization", {"name": "zenith"}) == {"zenith"}
    assert await search(client, "Organization", {"name": "health"}) == set()
    assert await search(client, "Organization", {"name:contains": "health"}) == {"acme"}
    assert await search(client, "Organization", {"name:exact": "Zénith Clinic"}) == {"zenith"}
