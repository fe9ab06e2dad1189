"""The SearchParameter registry (R4 searchparameter.html, search.html#ptypes): every
official definition compiles, the fast JSON walk agrees with fhirpathpy on real data,
and the rewrites fhirpathpy needs keep the meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fhirserver.resources.codec import loads
from fhirserver.resources.definitions import resource_types
from fhirserver.search.extract import entries_for
from fhirserver.search.params import (
    COLUMN_PARAMS,
    UNSUPPORTED,
    compile_expression,
    registry,
    rewrite,
    slow_expression,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _samples() -> list[dict[str, Any]]:
    examples = [loads(p.read_bytes()) for p in sorted((DATA / "r4" / "examples").glob("*.json"))]
    bundles = sorted((DATA / "synthea-2019").glob("*.json"))[:3]
    synthea = [e["resource"] for b in bundles for e in loads(b.read_bytes())["entry"]]
    return examples + synthea


def test_every_official_parameter_is_indexed_or_named_unsupported() -> None:
    missing = []
    for resource_type in resource_types():
        indexed = {param.code for param, _ in registry().indexed(resource_type)}
        for code, param in registry().for_type(resource_type).items():
            known = code in COLUMN_PARAMS or code in UNSUPPORTED or param.type == "special"
            if not known and code not in indexed:
                missing.append(f"{resource_type}.{code}")
    assert missing == []


def test_fast_walk_agrees_with_fhirpathpy() -> None:
    disagreements = []
    for resource in _samples():
        resource_type = resource["resourceType"]
        for param, fast in registry().indexed(resource_type):
            if param.type == "composite":
                continue
            expression = rewrite(param.expression_for(resource_type) or "")
            slow = slow_expression(expression)
            ours = {e for v in fast(resource) for e in entries_for(param.type, param.code, v)}
            theirs = {e for v in slow(resource) for e in entries_for(param.type, param.code, v)}
            if ours != theirs:
                disagreements.append((resource_type, resource.get("id"), param.code))
    assert disagreements == []


@pytest.mark.parametrize(
    "deceased",
    [{}, {"deceasedBoolean": False}, {"deceasedBoolean": True}, {"deceasedDateTime": "2020-01"}],
)
def test_deceased_is_computed_as_fhirpath_would(deceased: dict[str, Any]) -> None:
    """Patient.deceased (`deceased.exists() and deceased != false`) is computed without
    fhirpathpy, to the same value: a living Patient is deceased=false."""
    patient = {"resourceType": "Patient", **deceased}
    expression = registry().get("Patient", "deceased").expression_for("Patient")  # type: ignore[union-attr]
    assert expression is not None
    assert compile_expression(expression)(patient) == slow_expression(expression)(patient)


def test_parameters_left_out_for_a_resource_find_nothing_in_it() -> None:
    """Extraction evaluates only the parameters whose first step names a key of the
    resource (or a choice form of it); each one it leaves out would have found nothing."""
    skipped_with_values = []
    left_out = 0
    for resource in _samples():
        extraction = registry().extraction(resource["resourceType"])
        applicable = extraction.applicable(resource)
        for param, evaluate in extraction.indexed:
            if (param, evaluate) not in applicable:
                left_out += 1
                if evaluate(resource):
                    skipped_with_values.append((resource["resourceType"], param.code))
    assert skipped_with_values == []
    assert left_out > len(_samples())  # it does leave parameters out


@pytest.mark.parametrize(
    ("expression", "rewritten"),
    [
        ("(Observation.value as Quantity)", "Observation.value.ofType(Quantity)"),
        ("Condition.onset.as(Age)", "Condition.onset.ofType(Age)"),
        (
            "Observation.subject.where(resolve() is Patient)",
            "Observation.subject.where(reference.startsWith('Patient/')"
            " or reference.contains('/Patient/'))",
        ),
    ],
)
def test_rewrites(expression: str, rewritten: str) -> None:
    assert rewrite(expression) == rewritten


def test_choice_and_type_filters() -> None:
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 1},
        "subject": {"reference": "Group/1"},
        "effectivePeriod": {"start": "2020"},
    }
    assert compile_expression("Observation.value.ofType(Quantity)")(observation) == [{"value": 1}]
    assert compile_expression("Observation.value.ofType(string)")(observation) == []
    assert compile_expression("Observation.effective")(observation) == [{"start": "2020"}]
    patient_only = rewrite("Observation.subject.where(resolve() is Patient)")
    assert compile_expression(patient_only)(observation) == []
    assert compile_expression("code", relative=True)({"code": {"text": "x"}}) == [{"text": "x"}]


def test_an_absent_element_is_not_read_from_a_sibling_that_starts_with_its_name() -> None:
    """MedicinalProductAuthorization has both `status` (CodeableConcept) and `statusDate`
    (dateTime); `statusDate` is no form of `status`. fhirpathpy finds no status here, so
    no status token may be indexed (or `?status=2020-01-01` would match)."""
    authorization = {
        "resourceType": "MedicinalProductAuthorization",
        "id": "a1",
        "statusDate": "2020-01-01",
    }
    expression = "MedicinalProductAuthorization.status"
    assert slow_expression(expression)(authorization) == []
    assert compile_expression(expression)(authorization) == []
