"""The one policy (DESIGN.md "Authorization"; SMART App Launch 2.2.0
scopes-and-launch-context.html): scopes plus launch context decide what an `Access`
may read, search and write."""

from __future__ import annotations

from typing import Any

from fhirserver.auth.access import Access
from fhirserver.auth.compartment import patient_ids
from fhirserver.auth.policy import (
    UNRESTRICTED,
    Alternative,
    alternatives,
    can,
    may_write,
    restriction_query,
)
from fhirserver.auth.scopes import parse_scopes
from fhirserver.search.match import matches
from tests.auth.letters import CATEGORY, LAB, C, D, R, S, U


def access(scope: str, **context: str) -> Access:
    return Access(client_id="app", scopes=parse_scopes(scope), **context)


def observation(patient: str, category: str = "laboratory") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def test_patient_scopes_reach_only_the_launch_patients_compartment() -> None:
    """Section "Patient-specific scopes": the data of the one patient in context."""
    app = access("patient/*.rs", patient="123")
    assert alternatives(app, S, "Observation") == (Alternative("123"),)
    assert alternatives(app, R, "Patient") == (Alternative("123"),)
    assert not can(app, C, "Observation")
    # Types outside the patient compartment are outside a patient token's reach.
    assert not can(app, R, "Medication")
    assert not can(app, S, "Practitioner")


def test_a_patient_scope_without_a_patient_in_context_grants_nothing() -> None:
    """Section "The EHR SHALL establish a patient in context" when it grants a patient scope:
    a token without one reaches no patient at all."""
    assert not can(access("patient/*.cruds"), R, "Observation")
    assert alternatives(access("patient/Observation.rs"), S, "Observation") == ()


def test_system_scopes_reach_everything_they_name() -> None:
    backend = access("system/Observation.rs system/Patient.r")
    assert alternatives(backend, S, "Observation") == (UNRESTRICTED,)
    assert can(backend, R, "Patient") and not can(backend, S, "Patient")
    assert not can(backend, R, "Condition")


def test_user_scopes_follow_the_kind_of_user() -> None:
    """Section "User-level scopes" reach what the user may: a practitioner what the scopes
    name, a patient their own record, anyone else at most the launch patient."""
    scope = "user/*.cruds"
    assert alternatives(access(scope, user="Practitioner/9"), S, "Observation") == (UNRESTRICTED,)
    assert alternatives(access(scope, user="PractitionerRole/9"), R, "Medication") == (
        UNRESTRICTED,
    )
    assert alternatives(access(scope, user="Patient/7", patient="8"), S, "Observation") == (
        Alternative("7"),
    )
    assert alternatives(access(scope, user="RelatedPerson/5", patient="8"), S, "Observation") == (
        Alternative("8"),
    )
    assert not can(access(scope, user="RelatedPerson/5"), S, "Observation")
    assert not can(access(scope), S, "Observation")
    # An absolute fhirUser may name another server's practitioner: not trusted as one.
    assert not can(access(scope, user="https://elsewhere.example/Practitioner/9"), R, "Patient")


def test_union_of_scopes_keeps_the_broadest_alternatives() -> None:
    """Scopes add up: an unrestricted scope covers a restricted one, a practitioner's
    user scope covers a patient scope, and distinct restrictions stay alternatives."""
    app = access(
        f"patient/Observation.rs?category={LAB} patient/Observation.rs?status=final "
        "patient/Observation.r",
        patient="123",
    )
    assert alternatives(app, R, "Observation") == (Alternative("123"),)
    assert alternatives(app, S, "Observation") == (
        Alternative("123", (("category", LAB),)),
        Alternative("123", (("status", "final"),)),
    )
    both = access("patient/Observation.rs user/Observation.s", patient="1", user="Practitioner/2")
    assert alternatives(both, S, "Observation") == (UNRESTRICTED,)
    assert alternatives(both, R, "Observation") == (Alternative("1"),)


def test_patient_context_writes_stay_inside_the_compartment() -> None:
    """A patient-context write outside the patient's compartment is refused (issue 16)."""
    app = access("patient/Observation.cu patient/Patient.u", patient="123")
    assert may_write(app, C, observation("123"), patient_ids)
    assert not may_write(app, C, observation("456"), patient_ids)
    assert not may_write(app, D, observation("123"), patient_ids)
    assert may_write(app, U, {"resourceType": "Patient", "id": "123"}, patient_ids)
    assert not may_write(app, U, {"resourceType": "Patient", "id": "456"}, patient_ids)
    assert not may_write(app, C, {"resourceType": "Patient"}, patient_ids)
    assert not may_write(app, C, {"subject": {"reference": "Patient/123"}}, patient_ids)


def test_the_compartment_function_is_the_callers() -> None:
    """The policy asks the given function which patients a resource belongs to (the
    write path may answer from index entries it has already extracted)."""
    app = access("patient/Observation.c", patient="123")
    asked: list[str] = []

    def only_123(resource: dict[str, Any]) -> set[str]:
        asked.append(resource["resourceType"])
        return {"123"}

    assert may_write(app, C, observation("456"), only_123)
    assert asked == ["Observation"]
    assert may_write(access("system/*.c"), C, observation("456"), only_123)
    assert asked == ["Observation"]


def test_granular_restrictions_bind_writes() -> None:
    """A write under `?category=...|laboratory` may only write laboratory results."""
    app = access(f"patient/Observation.c?category={LAB}", patient="123")
    assert may_write(app, C, observation("123"), patient_ids)
    assert not may_write(app, C, observation("123", category="vital-signs"), patient_ids)
    system = access(f"system/Observation.cud?category={LAB}")
    assert may_write(system, U, observation("1"), patient_ids)
    assert not may_write(system, U, observation("1", category="social-history"), patient_ids)


def test_restrictions_this_server_cannot_evaluate_grant_nothing() -> None:
    """An unknown parameter, a result parameter or a chain would filter nothing if
    ignored; the alternative grants nothing instead."""
    for scope in (
        "system/Observation.c?unknown-param=1",
        "system/Observation.c?_count=1",
        "system/Observation.c?subject.name=x",
        "system/Observation.c?date=notadate",
    ):
        assert not may_write(access(scope), C, observation("1"), patient_ids), scope
    assert restriction_query("Observation", (("_count", "1"),)) is None
    query = restriction_query("Observation", (("category", LAB),))
    assert query is not None
    assert matches(query, observation("1"))
    assert not matches(query, observation("1", category="imaging"))
