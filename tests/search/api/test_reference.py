"""Reference search (R4 search.html#reference, #versions).

`[id]` matches a local reference to any type with that id, `[type]/[id]` and
`:[type]=[id]` one type, `[url]` an absolute reference; a relative reference and the
absolute URL it resolves to on this server match each other. `:identifier` searches
Reference.identifier as a token. A canonical reference (`canonical` elements) is
searched by its URL, with an optional `|[version]` that narrows the search to that
business version.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import build, search, search_error, seed, seeded
from tests.search.api.search_helpers import observation as loinc_observation

# The test client's base: http://testserver/fhir (tests/conftest.py).
BASE = "http://testserver/fhir"
MRN = "http://acme.org/mrn"


def observation(oid: str, **extra: Any) -> dict[str, Any]:
    return loinc_observation("29463-7", id=oid, **extra)


OBSERVATIONS = [
    observation("patient-p1", subject={"reference": "Patient/p1"}),
    observation("patient-p2", subject={"reference": "Patient/p2"}),
    observation("group-p1", subject={"reference": "Group/p1"}),
    observation("versioned-p1", subject={"reference": "Patient/p1/_history/2"}),
    observation("other-server-p1", subject={"reference": "http://other.org/fhir/Patient/p1"}),
    observation("absolute-p3", subject={"reference": f"{BASE}/Patient/p3"}),
    observation(
        "identifier-only",
        subject={"identifier": {"system": MRN, "value": "MRN-1"}, "display": "Eve"},
    ),
    observation(
        "identifier-and-p2",
        subject={"reference": "Patient/p2", "identifier": {"system": MRN, "value": "MRN-2"}},
    ),
    observation(
        "contained-p1",
        contained=[{"resourceType": "Patient", "id": "p1", "gender": "female"}],
        subject={"reference": "#p1"},
    ),
    observation("no-subject"),
]


observations = seeded(OBSERVATIONS)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # [id]: any type of local reference with that id.
        ({"subject": "p1"}, {"patient-p1", "group-p1", "versioned-p1"}),
        ({"subject": "p2"}, {"patient-p2", "identifier-and-p2"}),
        ({"subject": "p9"}, set()),
        # [type]/[id]
        ({"subject": "Patient/p1"}, {"patient-p1", "versioned-p1"}),
        ({"subject": "Group/p1"}, {"group-p1"}),
        ({"subject": "Device/p1"}, set()),
        # :[type] modifier
        ({"subject:Patient": "p1"}, {"patient-p1", "versioned-p1"}),
        ({"subject:Group": "p1"}, {"group-p1"}),
        ({"subject:Device": "p1"}, set()),
        ({"subject:Patient": "Patient/p1"}, {"patient-p1", "versioned-p1"}),
        # A parameter whose target is only Patient (Observation.patient).
        ({"patient": "p1"}, {"patient-p1", "versioned-p1"}),
        ({"patient": "Patient/p2"}, {"patient-p2", "identifier-and-p2"}),
        # Ids match exactly: no prefix, no case folding.
        ({"subject": "p"}, set()),
        ({"subject": "P1"}, set()),
        ({"subject": "Patient/p"}, set()),
    ],
)
async def test_local_references(
    observations: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(observations, "Observation", params) == expected


async def test_contained_reference_is_not_a_resource_id(observations: httpx.AsyncClient) -> None:
    """`#p1` points into the resource itself, not at Patient/p1."""
    got = await search(observations, "Observation", {"subject": "Patient/p1"})
    assert "contained-p1" not in got
    got = await search(observations, "Observation", {"subject": "p1"})
    assert "contained-p1" not in got


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://other.org/fhir/Patient/p1", {"other-server-p1"}),
        ("http://other.org/fhir/Patient/p2", set()),
        ("http://other.org/fhir/Patient", set()),
        (f"{BASE}/Patient/p3", {"absolute-p3"}),
    ],
)
async def test_absolute_references(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"subject": value}) == expected


async def test_absolute_url_of_this_server_matches_relative_reference(
    observations: httpx.AsyncClient,
) -> None:
    """search.html#reference: "A relative reference resolving to the same value as a
    specified absolute URL, or vice versa, qualifies as a match"."""
    got = await search(observations, "Observation", {"subject": f"{BASE}/Patient/p1"})
    assert got == {"patient-p1", "versioned-p1"}


async def test_relative_search_matches_absolute_reference_to_this_server(
    observations: httpx.AsyncClient,
) -> None:
    """The converse: the stored reference is absolute (this server), the search relative."""
    assert await search(observations, "Observation", {"subject": "Patient/p3"}) == {"absolute-p3"}
    assert await search(observations, "Observation", {"subject": "p3"}) == {"absolute-p3"}
    assert await search(observations, "Observation", {"patient": "p3"}) == {"absolute-p3"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{MRN}|MRN-1", {"identifier-only"}),
        ("MRN-1", {"identifier-only"}),
        (f"{MRN}|", {"identifier-only", "identifier-and-p2"}),
        (f"{MRN}|MRN-2", {"identifier-and-p2"}),
        ("http://other.org|MRN-1", set()),
        ("|MRN-1", set()),
        ("MRN-3", set()),
        (f"{MRN}|MRN-1,{MRN}|MRN-2", {"identifier-only", "identifier-and-p2"}),
    ],
)
async def test_identifier_modifier(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"subject:identifier": value}) == expected


async def test_identifier_is_not_the_reference(observations: httpx.AsyncClient) -> None:
    assert await search(observations, "Observation", {"subject": "MRN-1"}) == set()
    assert await search(observations, "Observation", {"subject:identifier": "p1"}) == set()


async def test_comma_is_or(observations: httpx.AsyncClient) -> None:
    got = await search(observations, "Observation", {"subject": "Patient/p1,Group/p1"})
    assert got == {"patient-p1", "versioned-p1", "group-p1"}
    got = await search(
        observations, "Observation", {"subject": "p2,http://other.org/fhir/Patient/p1"}
    )
    assert got == {"patient-p2", "identifier-and-p2", "other-server-p1"}


async def test_repeated_parameter_is_and(client: httpx.AsyncClient) -> None:
    await seed(
        client,
        [
            observation(
                "both",
                performer=[
                    {"reference": "Practitioner/dr1"},
                    {"reference": "Practitioner/dr2"},
                ],
            ),
            observation("dr1-only", performer=[{"reference": "Practitioner/dr1"}]),
            observation("dr2-org", performer=[{"reference": "Organization/dr2"}]),
        ],
    )
    both = [("performer", "Practitioner/dr1"), ("performer", "Practitioner/dr2")]
    assert await search(client, "Observation", both) == {"both"}
    assert await search(client, "Observation", {"performer": "dr2"}) == {"both", "dr2-org"}
    either = {"performer": "Practitioner/dr2,Organization/dr2"}
    assert await search(client, "Observation", either) == {"both", "dr2-org"}
    typed = [("performer:Practitioner", "dr2"), ("performer", "dr1")]
    assert await search(client, "Observation", typed) == {"both"}


@pytest.mark.parametrize(
    "params",
    [
        {"subject:NotAType": "p1"},
        {"subject:exact": "p1"},
        {"subject:contains": "p1"},
    ],
)
async def test_bad_modifiers_are_400(
    observations: httpx.AsyncClient, params: dict[str, str]
) -> None:
    await search_error(observations, "Observation", params)


INTAKE = "http://example.org/fhir/Questionnaire/intake"
DISCHARGE = "http://example.org/fhir/Questionnaire/discharge"


def response(rid: str, questionnaire: str | None) -> dict[str, Any]:
    return build("QuestionnaireResponse", id=rid, status="completed", questionnaire=questionnaire)


RESPONSES = [
    response("intake-1.0", f"{INTAKE}|1.0"),
    response("intake-2.0", f"{INTAKE}|2.0"),
    response("intake", INTAKE),
    response("discharge-1.0", f"{DISCHARGE}|1.0"),
    response("none", None),
]


responses = seeded(RESPONSES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The URL alone: every version.
        (INTAKE, {"intake-1.0", "intake-2.0", "intake"}),
        (DISCHARGE, {"discharge-1.0"}),
        ("http://example.org/fhir/Questionnaire/in", set()),
        ("http://example.org/fhir/Questionnaire", set()),
    ],
)
async def test_canonical_url(responses: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(responses, "QuestionnaireResponse", {"questionnaire": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{INTAKE}|1.0", {"intake-1.0"}),
        (f"{INTAKE}|2.0", {"intake-2.0"}),
        (f"{INTAKE}|3.0", set()),
        (f"{DISCHARGE}|1.0", {"discharge-1.0"}),
        (f"{DISCHARGE}|2.0", set()),
        (f"{INTAKE}|2.0,{DISCHARGE}|1.0", {"intake-2.0", "discharge-1.0"}),
    ],
)
async def test_canonical_url_with_version(
    responses: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    """search.html#versions: servers SHOULD detect a `|[version]` in the search value and
    search on the business version of the target."""
    assert await search(responses, "QuestionnaireResponse", {"questionnaire": value}) == expected
