"""Which patients' compartments a resource is in (R4 compartmentdefinition-patient).

Membership comes from the official Patient CompartmentDefinition, read once by
`fhirserver.search.params.patient_compartment`: a resource is in Patient X's
compartment when one of the listed search parameters references `Patient/X`; a
Patient is in its own.
"""

from __future__ import annotations

from typing import Any

from fhirserver.search.extract import index_entries
from fhirserver.search.params import patient_compartment
from fhirserver.search.query import IdPredicate, Predicate, ReferenceEntry, ReferencePredicate

PATIENT = "Patient"


def in_patient_compartment(resource_type: str) -> bool:
    """Whether resources of this type can be in a patient's compartment at all."""
    return resource_type == PATIENT or resource_type in patient_compartment()


def patient_ids(resource: dict[str, Any]) -> frozenset[str]:
    """The ids of the patients whose compartment `resource` is in.

    Only local references (`Patient/X`) count: an absolute URL, even one naming this
    server, puts nothing in a compartment, so a write that relies on one is refused
    rather than guessed at.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return frozenset()
    params = set(patient_compartment().get(resource_type, ()))
    ids = {
        entry.target_id
        for entry in index_entries(resource)
        if isinstance(entry, ReferenceEntry)
        and entry.param in params
        and entry.target_type == PATIENT
        and entry.target_id
    }
    own_id = resource.get("id")
    if resource_type == PATIENT and isinstance(own_id, str) and own_id:
        ids.add(own_id)
    return frozenset(ids)


def membership(resource_type: str, patient_id: str) -> tuple[Predicate, ...]:
    """An OR-list that a resource of `resource_type` meets when it is in Patient
    `patient_id`'s compartment (empty: the type has no patient compartment)."""
    params = patient_compartment().get(resource_type, ())
    members: list[Predicate] = [
        ReferencePredicate(param, PATIENT, patient_id) for param in params if param != "{def}"
    ]
    if resource_type == PATIENT:
        members.append(IdPredicate((patient_id,)))
    return tuple(members)
