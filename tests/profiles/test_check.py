"""Validation against a profile (R4 profiling.html, validation.html#profile): cardinality
along element paths, fixed and pattern values, the allowed types of a choice, slicing by
value and pattern discriminators, required bindings to ValueSets the profile's package
expands, and the profile's own invariants, on US Core 3.1.0 and small profiles."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fhirserver.profiles.check import check_profile
from fhirserver.profiles.constraints import COMPILED_AT_MOST, compiled
from fhirserver.profiles.model import ProfileError, compile_profile
from fhirserver.profiles.package import Package
from tests.profiles.conftest import US_CORE, definition

LOINC = "http://loinc.org"
VITALS = "http://terminology.hl7.org/CodeSystem/observation-category"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.3", "value": "42"}],
    "name": [{"family": "Chalmers", "given": ["Peter"]}],
    "gender": "male",
}
PULSE_OX: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "category": [{"coding": [{"system": VITALS, "code": "vital-signs"}]}],
    "code": {"coding": [{"system": LOINC, "code": "2708-6"}, {"system": LOINC, "code": "59408-5"}]},
    "subject": {"reference": "Patient/1"},
    "effectiveDateTime": "2020-01-02",
    "valueQuantity": {"value": 98, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
}


def _errors(package: Package, name: str, resource: dict[str, Any]) -> dict[str, str]:
    profile = compile_profile(definition(package, f"{US_CORE}/{name}"), {})
    return {
        str(i.expression): i.diagnostics
        for i in check_profile(profile, resource)
        if i.severity == "error"
    }


def test_a_conformant_us_core_patient_passes(us_core: Package) -> None:
    assert _errors(us_core, "us-core-patient", PATIENT) == {}


def test_us_core_patient_without_identifier_name_gender(us_core: Package) -> None:
    errors = _errors(us_core, "us-core-patient", {"resourceType": "Patient"})
    assert set(errors) == {"Patient.identifier", "Patient.name", "Patient.gender"}
    assert "us-core-patient" in errors["Patient.gender"]


def test_cardinality_in_every_repetition(us_core: Package) -> None:
    patient = copy.deepcopy(PATIENT)
    patient["identifier"].append({"value": "no system"})
    errors = _errors(us_core, "us-core-patient", patient)
    assert set(errors) == {"Patient.identifier[1].system"}


def test_the_profiles_own_invariant(us_core: Package) -> None:
    # us-core-8: family or given.
    patient = {**PATIENT, "name": [{"text": "Peter Chalmers"}]}
    errors = _errors(us_core, "us-core-patient", patient)
    assert "us-core-8" in errors["Patient.name[0]"]


def test_a_conformant_pulse_oximetry_passes(us_core: Package) -> None:
    assert _errors(us_core, "us-core-pulse-oximetry", PULSE_OX) == {}


def test_vital_signs_slices_fixed_values_and_choice_types(us_core: Package) -> None:
    observation = copy.deepcopy(PULSE_OX)
    observation["category"] = [{"coding": [{"system": VITALS, "code": "laboratory"}]}]
    observation["code"]["coding"].pop()
    observation["valueQuantity"]["code"] = "kg"
    errors = _errors(us_core, "us-core-pulse-oximetry", observation)
    assert "slice VSCat" in errors["Observation.category"]
    assert "slice PulseOx" in errors["Observation.code.coding"]
    assert "'%'" in errors["Observation.valueQuantity.code"]
    other = {**PULSE_OX, "valueString": "high"}
    del other["valueQuantity"]
    assert (
        "allows Quantity"
        in _errors(us_core, "us-core-pulse-oximetry", other)["Observation.valueString"]
    )


def test_a_pattern_slice_checks_its_content(us_core: Package) -> None:
    # component:FlowRate, recognised by its code pattern, needs a UCUM l/min value.
    flow = {
        "code": {"coding": [{"system": LOINC, "code": "3151-8"}]},
        "valueQuantity": {"value": 2, "system": "http://unitsofmeasure.org", "code": "mL/s"},
    }
    errors = _errors(us_core, "us-core-pulse-oximetry", {**PULSE_OX, "component": [flow]})
    assert "'l/min'" in errors["Observation.component[0].valueQuantity.code"]


def test_us_core_encounter(us_core: Package) -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"text": "checkup"}],
        "subject": {"reference": "Patient/1"},
    }
    assert _errors(us_core, "us-core-encounter", encounter) == {}
    errors = _errors(us_core, "us-core-encounter", {**encounter, "type": []} | {"subject": None})
    assert set(errors) == {"Encounter.type", "Encounter.subject"}


def _small_profile(**element: Any) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/StructureDefinition/p",
        "kind": "resource",
        "type": "Patient",
        "derivation": "constraint",
        "snapshot": {
            "element": [
                {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
                {
                    "id": "Patient.maritalStatus",
                    "path": "Patient.maritalStatus",
                    "min": 0,
                    "max": "1",
                    "base": {"path": "Patient.maritalStatus", "min": 0, "max": "1"},
                    **element,
                },
            ]
        },
    }


def test_a_required_binding_to_an_expanded_value_set() -> None:
    definition_ = _small_profile(
        binding={"strength": "required", "valueSet": "http://example.org/vs|1"}
    )
    profile = compile_profile(definition_, {"http://example.org/vs": frozenset({("s", "M")})})
    married = {
        "resourceType": "Patient",
        "maritalStatus": {"coding": [{"system": "s", "code": "M"}]},
    }
    assert check_profile(profile, married) == []
    other = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "s", "code": "X"}]}}
    (issue,) = check_profile(profile, other)
    assert (
        issue.expression == "Patient.maritalStatus" and "http://example.org/vs" in issue.diagnostics
    )
    # A ValueSet the server could not expand is left unchecked, and said to be.
    unexpanded = compile_profile(definition_, {})
    assert check_profile(unexpanded, other) == []
    assert unexpanded.unchecked == ("http://example.org/vs",)


def test_a_pattern_value() -> None:
    pattern = {"coding": [{"system": "s", "code": "M"}]}
    profile = compile_profile(_small_profile(patternCodeableConcept=pattern), {})
    extra = {"coding": [{"system": "t", "code": "1"}, {"system": "s", "code": "M"}], "text": "x"}
    assert check_profile(profile, {"resourceType": "Patient", "maritalStatus": extra}) == []
    (issue,) = check_profile(
        profile, {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "s"}]}}
    )
    assert issue.code == "value"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"snapshot": None}, "no snapshot"),
        ({"derivation": "specialization"}, "not a profile"),
        ({"kind": "complex-type"}, "not a StructureDefinition of a resource type"),
    ],
)
def test_unusable_definitions_are_refused_clearly(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        compile_profile({**_small_profile(), **change}, {})


def test_an_invariant_fhirpathpy_cannot_evaluate_is_a_warning(us_core: Package) -> None:
    # us-core-2 uses `value` as a boolean (FHIRPath singleton evaluation), which
    # fhirpathpy refuses: a warning that names the key, never an error or a 500.
    profile = compile_profile(definition(us_core, f"{US_CORE}/us-core-observation-lab"), {})
    lab = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": VITALS, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2339-0"}]},
        "subject": {"reference": "Patient/1"},
        "effectiveDateTime": "2020-01-02",
        "valueQuantity": {"value": 1, "system": "http://unitsofmeasure.org", "code": "mg/dL"},
    }
    (issue,) = check_profile(profile, lab)
    assert issue.severity == "warning" and "us-core-2" in issue.diagnostics
    assert "mg/dL" not in issue.diagnostics


def test_compiled_constraints_are_bounded() -> None:
    """Constraints come from StructureDefinitions any writer may store: the compiled
    ones kept are bounded, the most recently used first (issue 20, bounded memory)."""
    before = compiled.cache_info()
    assert before.maxsize == COMPILED_AT_MOST
    for n in range(COMPILED_AT_MOST + 5):
        compiled(f"name.count() >= {n}")
    assert compiled.cache_info().currsize == COMPILED_AT_MOST
