"""Token search (R4 search.html#token).

`[code]` matches Coding.code / Identifier.value whatever the system; `[system]|[code]`
both; `|[code]` a code with no system; `[system]|` any code in the system. Token
parameters cover CodeableConcept (any coding), Coding, Identifier, ContactPoint, code and
boolean. Modifiers: `:not` (includes resources with no value), `:text` (a string search
on CodeableConcept.text, Coding.display, Identifier.type.text), `:of-type` on
identifiers (system|code|value of Identifier.type).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import search, search_error, seed, seeded

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ACME = "http://acme.org/codes"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MRN = "http://acme.org/mrn"


def observation(oid: str, code: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": code, **extra}


OBSERVATIONS = [
    observation(
        "glucose",
        {
            "coding": [{"system": LOINC, "code": "15074-8", "display": "Glucose [Moles/volume]"}],
            "text": "Blood glucose",
        },
    ),
    observation("glucose-acme", {"coding": [{"system": ACME, "code": "15074-8"}]}),
    observation("glucose-nosys", {"coding": [{"code": "15074-8"}]}),
    observation(
        "bp",
        {
            "coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}],
            "text": "BP",
        },
    ),
    observation(
        "multi",
        {
            "coding": [
                {"system": LOINC, "code": "2339-0", "display": "Glucose [Mass/volume]"},
                {"system": SNOMED, "code": "33747003", "display": "Glucose measurement, blood"},
            ]
        },
    ),
    observation("text-only", {"text": "Glucose tolerance, unspecified"}, status="preliminary"),
]
ALL_OBSERVATIONS = {o["id"] for o in OBSERVATIONS}


observations = seeded(OBSERVATIONS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # [code]: whatever the system, or none.
        ("15074-8", {"glucose", "glucose-acme", "glucose-nosys"}),
        ("33747003", {"multi"}),
        # [system]|[code]
        (f"{LOINC}|15074-8", {"glucose"}),
        (f"{ACME}|15074-8", {"glucose-acme"}),
        (f"{SNOMED}|33747003", {"multi"}),
        (f"{LOINC}|2339-0", {"multi"}),
        # System and code have to be on the same Coding.
        (f"{LOINC}|33747003", set()),
        (f"{SNOMED}|2339-0", set()),
        # |[code]: no system at all.
        ("|15074-8", {"glucose-nosys"}),
        ("|85354-9", set()),
        # [system]|: any code in that system.
        (f"{LOINC}|", {"glucose", "bp", "multi"}),
        (f"{SNOMED}|", {"multi"}),
        ("http://unknown.org|", set()),
        # Codes match exactly, not as a prefix.
        ("15074", set()),
        ("15074-89", set()),
        # The display and the text are not codes.
        ("BP", set()),
        ("Blood glucose", set()),
    ],
)
async def test_codeable_concept(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"code": value}) == expected


async def test_code_datatype(observations: httpx.AsyncClient) -> None:
    """A plain `code` element (Observation.status)."""
    everything_final = ALL_OBSERVATIONS - {"text-only"}
    assert await search(observations, "Observation", {"status": "final"}) == everything_final
    assert await search(observations, "Observation", {"status": "preliminary"}) == {"text-only"}
    assert await search(observations, "Observation", {"status": "amended"}) == set()
    assert await search(observations, "Observation", {"status": "fin"}) == set()


ENCOUNTERS = [
    {
        "resourceType": "Encounter",
        "id": "ambulatory",
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory",
        },
    },
    {
        "resourceType": "Encounter",
        "id": "inpatient",
        "status": "in-progress",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "IMP",
            "display": "inpatient encounter",
        },
    },
    {
        "resourceType": "Encounter",
        "id": "local",
        "status": "finished",
        "class": {"system": "http://acme.org/encounter-class", "code": "AMB"},
    },
]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"class": "AMB"}, {"ambulatory", "local"}),
        ({"class": "http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB"}, {"ambulatory"}),
        ({"class": "http://acme.org/encounter-class|AMB"}, {"local"}),
        (
            {"class": "http://terminology.hl7.org/CodeSystem/v3-ActCode|"},
            {"ambulatory", "inpatient"},
        ),
        ({"class": "|AMB"}, set()),
        ({"class": "IMP"}, {"inpatient"}),
        ({"class": "amb"}, set()),
        ({"class:text": "inpatient"}, {"inpatient"}),
        ({"class:text": "AMBUL"}, {"ambulatory"}),
        ({"class:not": "AMB"}, {"inpatient"}),
    ],
)
async def test_coding(
    client: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    """A plain Coding element (Encounter.class)."""
    await seed(client, ENCOUNTERS)
    assert await search(client, "Encounter", params) == expected


PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "mrn",
        "active": True,
        "gender": "female",
        "identifier": [
            {
                "type": {
                    "coding": [{"system": V2_0203, "code": "MR"}],
                    "text": "Medical record number",
                },
                "system": MRN,
                "value": "12345",
            }
        ],
        "telecom": [
            {"system": "phone", "value": "555-1234"},
            {"system": "email", "value": "eve@example.org"},
        ],
    },
    {
        "resourceType": "Patient",
        "id": "licence",
        "active": False,
        "gender": "male",
        "identifier": [
            {
                "type": {"coding": [{"system": V2_0203, "code": "DL"}], "text": "Driver's licence"},
                "system": "http://dmv.example.org",
                "value": "12345",
            },
            {"system": MRN, "value": "67890"},
        ],
        "telecom": [{"system": "email", "value": "bob@example.org"}],
    },
    {
        "resourceType": "Patient",
        "id": "nosystem",
        "gender": "other",
        "identifier": [{"value": "12345"}],
    },
    {"resourceType": "Patient", "id": "bare"},
]
ALL_PATIENTS = {p["id"] for p in PATIENTS}


patients = seeded(PATIENTS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12345", {"mrn", "licence", "nosystem"}),
        (f"{MRN}|12345", {"mrn"}),
        (f"{MRN}|67890", {"licence"}),
        ("http://dmv.example.org|12345", {"licence"}),
        ("|12345", {"nosystem"}),
        (f"{MRN}|", {"mrn", "licence"}),
        # Value and system of one Identifier, not of two.
        (f"{MRN}|99999", set()),
        ("http://dmv.example.org|67890", set()),
        ("1234", set()),
        # The type's code is not the identifier's value.
        ("MR", set()),
    ],
)
async def test_identifier(patients: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(patients, "Patient", {"identifier": value}) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"gender": "female"}, {"mrn"}),
        ({"gender": "male"}, {"licence"}),
        ({"gender": "unknown"}, set()),
        # A boolean is a token with the codes true and false.
        ({"active": "true"}, {"mrn"}),
        ({"active": "false"}, {"licence"}),
        # ContactPoint: the value, without the system.
        ({"telecom": "555-1234"}, {"mrn"}),
        ({"telecom": "eve@example.org"}, {"mrn"}),
        ({"email": "bob@example.org"}, {"licence"}),
        ({"email": "555-1234"}, set()),
        ({"phone": "555-1234"}, {"mrn"}),
    ],
)
async def test_code_boolean_and_contact_point(
    patients: httpx.AsyncClient, params: dict[str, str], expected: set[str]
) -> None:
    assert await search(patients, "Patient", params) == expected


@pytest.mark.parametrize(
    ("resource_type", "params", "expected"),
    [
        # Includes the resources with no value at all (search.html#token, :not).
        ("Patient", {"gender:not": "male"}, ALL_PATIENTS - {"licence"}),
        ("Patient", {"active:not": "true"}, {"licence", "nosystem", "bare"}),
        ("Patient", {"active:not": "false"}, {"mrn", "nosystem", "bare"}),
        ("Patient", {"identifier:not": f"{MRN}|12345"}, {"licence", "nosystem", "bare"}),
        ("Patient", {"identifier:not": "12345"}, {"bare"}),
        # The negation is of the set: a resource with any matching coding is excluded.
        ("Observation", {"code:not": f"{SNOMED}|33747003"}, ALL_OBSERVATIONS - {"multi"}),
        ("Observation", {"code:not": f"{LOINC}|15074-8"}, ALL_OBSERVATIONS - {"glucose"}),
        (
            "Observation",
            {"code:not": "15074-8"},
            ALL_OBSERVATIONS - {"glucose", "glucose-acme", "glucose-nosys"},
        ),
        ("Observation", {"code:not": f"{LOINC}|"}, {"glucose-acme", "glucose-nosys", "text-only"}),
    ],
)
async def test_not(
    patients: httpx.AsyncClient,
    resource_type: str,
    params: dict[str, str],
    expected: set[str],
) -> None:
    await seed(patients, OBSERVATIONS)
    assert await search(patients, resource_type, params) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # CodeableConcept.text and Coding.display, starts-with and case-insensitive.
        ("blood", {"glucose", "bp"}),
        ("Blood glucose", {"glucose"}),
        ("glucose", {"glucose", "multi", "text-only"}),
        ("GLUCOSE MEAS", {"multi"}),
        ("bp", {"bp"}),
        ("glucose tolerance", {"text-only"}),
        # Not in the middle of the text, and codes are not text.
        ("pressure", set()),
        ("15074-8", set()),
        ("2339", set()),
    ],
)
async def test_text_on_codeable_concept_and_coding_display(
    observations: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(observations, "Observation", {"code:text": value}) == expected


async def test_text_on_identifier_type_text(patients: httpx.AsyncClient) -> None:
    """:text searches "CodeableConcept.text, Coding.display, or Identifier.type.text"."""
    assert await search(patients, "Patient", {"identifier:text": "medical"}) == {"mrn"}
    assert await search(patients, "Patient", {"identifier:text": "driver"}) == {"licence"}
    assert await search(patients, "Patient", {"identifier:text": "12345"}) == set()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{V2_0203}|MR|12345", {"mrn"}),
        (f"{V2_0203}|DL|12345", {"licence"}),
        # The type must be the one on the identifier holding the value.
        (f"{V2_0203}|MR|67890", set()),
        (f"{V2_0203}|DL|67890", set()),
        (f"{V2_0203}|MR|1234", set()),
        ("http://other.org/types|MR|12345", set()),
        (f"{V2_0203}|MR|12345,{V2_0203}|DL|12345", {"mrn", "licence"}),
    ],
)
async def test_of_type(patients: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(patients, "Patient", {"identifier:of-type": value}) == expected


@pytest.mark.parametrize("value", [f"{V2_0203}|MR", "MR|12345", f"{V2_0203}||12345", "12345"])
async def test_of_type_needs_all_three_parts(patients: httpx.AsyncClient, value: str) -> None:
    """search.html#token: ":of-type ... All 3 parts must be present"."""
    await search_error(patients, "Patient", {"identifier:of-type": value})


async def test_comma_is_or(observations: httpx.AsyncClient) -> None:
    value = f"{LOINC}|85354-9,{SNOMED}|33747003"
    assert await search(observations, "Observation", {"code": value}) == {"bp", "multi"}
    value = f"{LOINC}|85354-9,nothing"
    assert await search(observations, "Observation", {"code": value}) == {"bp"}


async def test_repeated_parameter_is_and(observations: httpx.AsyncClient) -> None:
    both = [("code", f"{LOINC}|2339-0"), ("code", f"{SNOMED}|33747003")]
    assert await search(observations, "Observation", both) == {"multi"}
    neither = [("code", f"{LOINC}|2339-0"), ("code", f"{LOINC}|85354-9")]
    assert await search(observations, "Observation", neither) == set()
    mixed = [("code", f"{LOINC}|"), ("code:text", "blood")]
    assert await search(observations, "Observation", mixed) == {"glucose", "bp"}


async def test_escaped_separators_in_a_token(client: httpx.AsyncClient) -> None:
    """search.html#escaping: `\\|` and `\\,` are literal in a token value."""
    await seed(
        client,
        [
            {"resourceType": "Patient", "id": "bar", "identifier": [{"value": "a|b"}]},
            {"resourceType": "Patient", "id": "comma", "identifier": [{"value": "a,b"}]},
            {"resourceType": "Patient", "id": "plain", "identifier": [{"value": "a"}]},
        ],
    )
    assert await search(client, "Patient", {"identifier": "a\\|b"}) == {"bar"}
    assert await search(client, "Patient", {"identifier": "a\\,b"}) == {"comma"}
    assert await search(client, "Patient", {"identifier": "a,b"}) == {"plain"}


@pytest.mark.parametrize("modifier", ["exact", "contains", "missingx", "type", "Patient"])
async def test_string_and_unknown_modifiers_are_refused_on_tokens(
    observations: httpx.AsyncClient, modifier: str
) -> None:
    await search_error(observations, "Observation", {f"code:{modifier}": "15074-8"})


async def test_too_many_bars_is_400(observations: httpx.AsyncClient) -> None:
    await search_error(observations, "Observation", {"code": f"{LOINC}|15074-8|extra"})
