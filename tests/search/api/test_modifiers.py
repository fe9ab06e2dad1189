"""Modifiers (R4 search.html#modifiers), the ones common to several types.

`:missing=true` matches resources with no value for the parameter, `:missing=false`
those with one, on every parameter type. A terminology modifier (`:in`, `:not-in`,
`:above`/`:below` on tokens) over a ValueSet or code system the server cannot expand
(test_token_terminology.py has the ones it can) is refused rather than ignored, and so
is a modifier that does not exist or does not apply to the parameter's type. The
type-specific modifiers (`:exact`, `:contains`, `:not`, `:text`, `:of-type`, `:[type]`,
`:identifier`, `:below`, `:above` on uri) are tested with their type.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import observation as loinc_observation
from tests.search.api.search_helpers import risk, search, search_error, seed, seeded

PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "full",
        "active": True,
        "name": [{"family": "Full", "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1980-01-01",
        "generalPractitioner": [{"reference": "Practitioner/pr1"}],
        "identifier": [{"system": "urn:mrn", "value": "1"}],
        "address": [{"city": "Paris"}],
    },
    {
        "resourceType": "Patient",
        "id": "partial",
        "name": [{"given": ["Bob"]}],
        "gender": "male",
    },
    {"resourceType": "Patient", "id": "empty"},
]
ALL = {"full", "partial", "empty"}


patients = seeded(PATIENTS)


@pytest.mark.parametrize(
    ("name", "present"),
    [
        # string
        ("family", {"full"}),
        ("given", {"full", "partial"}),
        ("name", {"full", "partial"}),
        ("address", {"full"}),
        ("address-city", {"full"}),
        # token: code, boolean, Identifier
        ("gender", {"full", "partial"}),
        ("active", {"full"}),
        ("identifier", {"full"}),
        # date
        ("birthdate", {"full"}),
        # reference
        ("general-practitioner", {"full"}),
    ],
)
async def test_missing_on_patient(
    patients: httpx.AsyncClient, name: str, present: set[str]
) -> None:
    assert await search(patients, "Patient", {f"{name}:missing": "false"}) == present
    assert await search(patients, "Patient", {f"{name}:missing": "true"}) == ALL - present


def observation(oid: str, **value: Any) -> dict[str, Any]:
    return loinc_observation("2345-7", id=oid, **value)


@pytest.mark.parametrize(
    ("resource_type", "name", "resources", "present"),
    [
        (
            "Observation",
            "value-quantity",
            [
                observation("with", valueQuantity={"value": 5.4, "unit": "mg"}),
                observation("string", valueString="high"),
                observation("without"),
            ],
            {"with"},
        ),
        (
            "Observation",
            "date",
            [
                observation("with", effectivePeriod={"start": "2020-01-01"}),
                observation("without"),
            ],
            {"with"},
        ),
        (
            "Observation",
            "subject",
            [
                observation("with", subject={"reference": "Patient/p1"}),
                observation("without"),
            ],
            {"with"},
        ),
        (
            "RiskAssessment",
            "probability",
            [
                risk("with", probabilityDecimal=0.3),
                risk("qualitative", qualitativeRisk={"text": "low"}),
                risk("without"),
            ],
            {"with"},
        ),
        (
            "ValueSet",
            "url",
            [
                {
                    "resourceType": "ValueSet",
                    "id": "with",
                    "status": "active",
                    "url": "http://acme.org/vs",
                },
                {"resourceType": "ValueSet", "id": "without", "status": "active"},
            ],
            {"with"},
        ),
        (
            "QuestionnaireResponse",
            "questionnaire",
            [
                {
                    "resourceType": "QuestionnaireResponse",
                    "id": "with",
                    "status": "completed",
                    "questionnaire": "http://acme.org/Questionnaire/q|1.0",
                },
                {"resourceType": "QuestionnaireResponse", "id": "without", "status": "completed"},
            ],
            {"with"},
        ),
    ],
)
async def test_missing_on_other_types(
    client: httpx.AsyncClient,
    resource_type: str,
    name: str,
    resources: list[dict[str, Any]],
    present: set[str],
) -> None:
    await seed(client, resources)
    every = {r["id"] for r in resources}
    assert await search(client, resource_type, {f"{name}:missing": "false"}) == present
    assert await search(client, resource_type, {f"{name}:missing": "true"}) == every - present


async def test_missing_combines_with_other_criteria(patients: httpx.AsyncClient) -> None:
    both = [("gender", "male"), ("family:missing", "true")]
    assert await search(patients, "Patient", both) == {"partial"}
    contradictory = [("family:missing", "true"), ("family:missing", "false")]
    assert await search(patients, "Patient", contradictory) == set()
    assert await search(patients, "Patient", [("family", "full"), ("given:missing", "false")]) == {
        "full"
    }


@pytest.mark.parametrize("value", ["yes", "TRUE", "1", "maybe", "true-ish"])
async def test_missing_takes_only_true_or_false(patients: httpx.AsyncClient, value: str) -> None:
    await search_error(patients, "Patient", {"family:missing": value})


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        ("Observation", {"code:in": "http://acme.org/fhir/ValueSet/cardiac"}),
        ("Observation", {"code:not-in": "http://acme.org/fhir/ValueSet/cardiac"}),
        ("Condition", {"code:below": "http://snomed.info/sct|126851005"}),
        ("Condition", {"code:above": "http://snomed.info/sct|126851005"}),
    ],
)
async def test_terminology_the_server_cannot_expand_is_refused(
    client: httpx.AsyncClient, resource_type: str, params: dict[str, str]
) -> None:
    outcome = await search_error(client, resource_type, params)
    assert outcome["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize(
    ("resource_type", "params"),
    [
        # Not a modifier at all.
        ("Patient", {"family:foo": "x"}),
        ("Patient", {"family:": "x"}),
        ("Patient", {"gender:MISSING": "true"}),
        # Real modifiers on a type they do not apply to.
        ("Patient", {"birthdate:exact": "1980-01-01"}),
        ("Patient", {"birthdate:contains": "1980"}),
        ("Patient", {"birthdate:not": "1980-01-01"}),
        ("Patient", {"gender:contains": "male"}),
        ("Patient", {"gender:exact": "male"}),
        ("Patient", {"family:not": "full"}),
        ("Patient", {"family:of-type": "a|b|c"}),
        ("Patient", {"general-practitioner:exact": "pr1"}),
        ("Patient", {"general-practitioner:not": "pr1"}),
        ("Observation", {"value-quantity:exact": "5.4"}),
        ("Observation", {"value-quantity:not": "5.4"}),
        ("RiskAssessment", {"probability:contains": "0.5"}),
        ("ValueSet", {"url:exact": "http://acme.org/vs"}),
        ("ValueSet", {"url:not": "http://acme.org/vs"}),
        # A [type] modifier that is not a resource type.
        ("Observation", {"subject:Patientx": "p1"}),
        ("Observation", {"subject:patient": "p1"}),
    ],
)
async def test_bad_modifiers_are_400(
    client: httpx.AsyncClient, resource_type: str, params: dict[str, str]
) -> None:
    await search_error(client, resource_type, params)
