"""Validation of incoming resources as R4 4.0.1 (R4 json.html, resource.html): R4B models
for most types, the R4 JSON Schema for R4-only or reshaped ones, and FHIRPath expressions
naming what is wrong."""

from __future__ import annotations

import pytest

from fhirserver.errors import BadRequest, FHIRError, Unprocessable
from fhirserver.resources.definitions import r4b_model, resource_types
from fhirserver.resources.validate import validate


def test_the_146_r4_types() -> None:
    types = resource_types()
    assert len(types) == 146
    assert "MedicinalProduct" in types and "SubscriptionTopic" not in types


def test_r4b_only_types_are_not_r4() -> None:
    with pytest.raises(BadRequest):
        validate({"resourceType": "SubscriptionTopic", "url": "x", "status": "draft"})


def test_reshaped_types_use_the_r4_structure() -> None:
    assert r4b_model("Evidence") is None and r4b_model("Patient") is not None
    r4_evidence = {
        "resourceType": "Evidence",
        "status": "draft",
        "exposureBackground": {"reference": "Group/1"},
    }
    assert validate(r4_evidence) == "Evidence"
    with pytest.raises(FHIRError):
        validate({"resourceType": "Evidence", "status": "draft"})


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "active": "true"}, "Patient.active"),
        ({"resourceType": "Patient", "multipleBirthInteger": 1.5}, "Patient.multipleBirthInteger"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
        ({"resourceType": "Patient", "name": [{"given": "x"}]}, "Patient.name[0].given"),
        (
            {"resourceType": "Observation", "status": "final", "code": {}, "valueDecimal": "1.0"},
            "Observation.valueDecimal",
        ),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "active": 1}]},
            "Patient.contained[0].active",
        ),
        ({"resourceType": "Patient", "_birthDate": {"extension": "x"}}, "Patient._birthDate"),
    ],
)
def test_json_kinds_are_checked(resource: dict[str, object], expression: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate(resource)
    assert any(
        issue.expression and issue.expression.startswith(expression)
        for issue in caught.value.issues
    )


def test_missing_required_is_422() -> None:
    with pytest.raises(Unprocessable) as caught:
        validate({"resourceType": "MedicinalProduct"})
    assert caught.value.issues[0].code == "required"
