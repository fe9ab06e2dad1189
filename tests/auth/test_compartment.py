"""R4 compartmentdefinition-patient: which patients' compartments a resource is in,
read from the official definition the search module already loads."""

from __future__ import annotations

from fhirserver.auth.compartment import in_patient_compartment, patient_ids


def test_compartment_parameters_name_the_patients() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/1"},
        "performer": [{"reference": "Patient/2"}, {"reference": "Practitioner/9"}],
    }
    assert patient_ids(observation) == {"1", "2"}
    encounter = {"resourceType": "Encounter", "subject": {"reference": "Patient/3/_history/2"}}
    assert patient_ids(encounter) == {"3"}


def test_a_patient_is_in_its_own_compartment_and_those_it_is_linked_from() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "7",
        "link": [{"other": {"reference": "Patient/8"}, "type": "seealso"}],
    }
    assert patient_ids(patient) == {"7", "8"}
    assert patient_ids({"resourceType": "Patient"}) == frozenset()


def test_absolute_references_and_types_without_a_compartment_name_nobody() -> None:
    """Only local references count: an absolute URL could be another server's patient."""
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "https://elsewhere.example/fhir/Patient/1"},
    }
    assert patient_ids(observation) == frozenset()
    assert patient_ids({"resourceType": "Medication", "id": "m"}) == frozenset()
    assert patient_ids({"subject": {"reference": "Patient/1"}}) == frozenset()
    assert in_patient_compartment("Observation") and in_patient_compartment("Patient")
    assert not in_patient_compartment("Medication")
    assert not in_patient_compartment("Practitioner")
