"""Required bindings (R4 terminologies.html#binding): a code, Coding, CodeableConcept or
coded Quantity outside the bound ValueSet is an error (422 on a write, validation.html);
extensible and preferred bindings only warn; data type bindings apply wherever the type
is used; contained resources and Bundle entries are checked as their own types."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pytest

from fhirserver.errors import Unprocessable
from fhirserver.resources.bindings import binding_warnings, check_bindings, compile_tree, issues_in
from fhirserver.resources.validate import validate
from tests.conftest import SHARED_DATA

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"


def _allergy(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p"}, **extra}


def _expressions(resource: dict[str, Any]) -> list[str | None]:
    return [issue.expression for issue in check_bindings(resource["resourceType"], resource)]


def test_a_code_outside_its_required_valueset_is_refused_with_element_and_valueset() -> None:
    with pytest.raises(Unprocessable) as caught:
        validate({"resourceType": "Patient", "gender": "dragon"})
    (issue,) = caught.value.issues
    assert issue.expression == "Patient.gender"
    assert issue.code == "code-invalid" and issue.severity == "error"
    assert GENDER_VS in issue.diagnostics and "dragon" in issue.diagnostics
    assert caught.value.status == 422


def test_codes_in_their_valuesets_pass() -> None:
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "telecom": [{"system": "phone", "value": "1", "use": "home"}],
        "name": [{"use": "official", "family": "X"}],
        # pat-1: a contact has details.
        "contact": [{"gender": "other", "name": {"family": "Y"}}],
    }
    assert validate(patient) == "Patient"
    assert check_bindings("Patient", patient) == []


def test_a_backbone_element_code_is_checked() -> None:
    assert _expressions({"resourceType": "Patient", "contact": [{"gender": "x"}]}) == [
        "Patient.contact[0].gender"
    ]


def test_a_data_type_binding_applies_where_the_type_is_used() -> None:
    patient = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "pager2", "value": "2"}],
        "identifier": [{"use": "secondary-ish", "value": "a"}],
    }
    assert sorted(map(str, _expressions(patient))) == [
        "Patient.identifier[0].use",
        "Patient.telecom[1].system",
    ]


def test_a_required_codeableconcept_needs_a_coding_from_the_valueset() -> None:
    good = _allergy(clinicalStatus={"coding": [{"system": ALLERGY_CLINICAL, "code": "active"}]})
    assert check_bindings("AllergyIntolerance", good) == []
    # One coding from the set is enough, whatever the others are.
    mixed = _allergy(
        clinicalStatus={
            "coding": [
                {"system": "http://example.org/local", "code": "on"},
                {"system": ALLERGY_CLINICAL, "code": "resolved"},
            ]
        }
    )
    assert check_bindings("AllergyIntolerance", mixed) == []
    for wrong in (
        {"coding": [{"system": ALLERGY_CLINICAL, "code": "maybe"}]},
        # The right code in another system is another concept.
        {"coding": [{"system": "http://example.org/local", "code": "active"}]},
        {"coding": [{"code": "active"}]},
        {"text": "active"},  # text alone names no concept of the set
    ):
        issues = check_bindings("AllergyIntolerance", _allergy(clinicalStatus=wrong))
        assert [i.expression for i in issues] == ["AllergyIntolerance.clinicalStatus"], wrong
        assert "allergyintolerance-clinical" in issues[0].diagnostics


def test_a_choice_element_is_checked_under_its_json_name() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70, "comparator": "about"},
    }
    assert _expressions(observation) == ["Observation.valueQuantity.comparator"]
    observation["valueQuantity"] = {"value": 70, "comparator": ">="}
    assert _expressions(observation) == []


def test_a_primitive_extension_is_checked_through_its_twin() -> None:
    patient = {
        "resourceType": "Patient",
        "_birthDate": {
            "extension": [{"url": "http://example.org/x", "valueContactPoint": {"system": "?"}}]
        },
    }
    assert _expressions(patient) == ["Patient._birthDate.extension[0].valueContactPoint.system"]


def test_contained_resources_and_bundle_entries_are_checked_as_their_own_types() -> None:
    patient = {
        "resourceType": "Patient",
        "contained": [{"resourceType": "Observation", "status": "guessed", "code": {"text": "x"}}],
    }
    assert _expressions(patient) == ["Patient.contained[0].status"]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "gender": "x"}}],
    }
    assert _expressions(bundle) == ["Bundle.entry[0].resource.gender"]
    bundle["type"] = "heap"
    assert _expressions(bundle) == ["Bundle.type", "Bundle.entry[0].resource.gender"]


def test_primitive_arrays_are_checked_item_by_item() -> None:
    parameter = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/sp",
        "name": "x",
        "status": "active",
        "description": "x",
        "code": "x",
        "type": "token",
        "base": ["Patient", "Dragon"],
    }
    assert _expressions(parameter) == ["SearchParameter.base[1]"]


def test_bindings_to_valuesets_not_expandable_here_are_not_enforced() -> None:
    # Attachment.contentType: required to MIME types (urn:ietf:bcp:13), not in the definitions.
    patient = {"resourceType": "Patient", "photo": [{"contentType": "not/a-real-type"}]}
    assert check_bindings("Patient", patient) == []


def test_extensible_and_preferred_bindings_warn_and_never_fail() -> None:
    patient = {
        "resourceType": "Patient",
        "maritalStatus": {
            "coding": [{"system": "http://example.org/ms", "code": "it-is-complicated"}]
        },
    }
    assert validate(patient) == "Patient"
    (warning,) = binding_warnings("Patient", patient)
    assert warning.severity == "warning" and warning.expression == "Patient.maritalStatus"
    assert "http://hl7.org/fhir/ValueSet/marital-status" in warning.diagnostics
    assert "extensible" in warning.diagnostics


# The base R4 definitions bind no Coding or Quantity element `required` (profiles do, see
# profiling.html#binding); a table of that shape exercises those kinds.
_CODED_TABLE = {
    "Thing": {
        "coding": [None, "Coding", "required", GENDER_VS],
        "amount": ["Quantity", "Quantity", "required", GENDER_VS],
    }
}
_GENDER = "http://hl7.org/fhir/administrative-gender"


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ({"coding": {"system": _GENDER, "code": "male"}}, []),
        ({"coding": {"system": _GENDER, "code": "dragon"}}, ["Thing.coding"]),
        ({"coding": {"system": "http://example.org", "code": "male"}}, ["Thing.coding"]),
        ({"coding": {"code": "male"}}, ["Thing.coding"]),
        ({"amount": {"value": 1, "system": _GENDER, "code": "female"}}, []),
        ({"amount": {"value": 1, "system": _GENDER, "code": "kg"}}, ["Thing.amount"]),
        # A unit given as text only carries no coded unit to judge.
        ({"amount": {"value": 1, "unit": "kg"}}, []),
    ],
)
def test_a_required_coding_or_quantity_needs_system_and_code_from_the_valueset(
    value: dict[str, Any], wrong: list[str]
) -> None:
    tree = compile_tree(_CODED_TABLE, frozenset({"required"}))
    found = [issue.expression for issue in issues_in(tree, "Thing", value, "error")]
    assert found == wrong


# validation.html: the official examples and the Synthea set as the definitions judge them.
# Examples the required bindings refuse, by file name, with the reason: none of the 717
# (each bound code, Coding and CodeableConcept in them is in its expandable ValueSet).
EXAMPLES_REFUSED: dict[str, str] = {}


def _refused(resources: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    found = {}
    for name, resource in resources:
        issues = check_bindings(resource["resourceType"], resource)
        if issues:
            found[name] = [f"{i.expression}: {i.diagnostics}" for i in issues]
    return found


def test_the_official_examples_meet_their_required_bindings() -> None:
    examples = sorted((SHARED_DATA / "r4" / "examples").glob("*.json"))
    assert len(examples) == 717
    refused = _refused((path.name, orjson.loads(path.read_bytes())) for path in examples)
    assert set(refused) == set(EXAMPLES_REFUSED), refused


def test_the_synthea_resources_meet_their_required_bindings() -> None:
    def entries() -> Iterator[tuple[str, dict[str, Any]]]:
        for path in sorted((SHARED_DATA / "synthea-2019").glob("*.json")):
            for entry in orjson.loads(path.read_bytes())["entry"]:
                yield entry["fullUrl"], entry["resource"]

    assert _refused(entries()) == {}
