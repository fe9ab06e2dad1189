"""The one access policy: what an `Access` may do (DESIGN.md "Authorization").

Deny by default. An interaction on a type is allowed through *alternatives*, one per
scope that grants it (scopes add up: SMART 2.2 "Scope Equivalence"); each alternative
reaches the resources inside one patient's compartment, or anywhere, that match its
granular restriction. Reads and searches add the alternatives to the query itself;
writes ask `may_write` about the resource.

Whose data each context reaches (SMART 2.2 leaves the "underlying permissions" to the
server, "SMART's scopes are used to delegate access"):

- `system/`: anything the scopes name.
- `patient/`: only the launch patient's compartment, and only types that have one; a
  token without a patient in context reaches nothing (SMART: the server "SHALL
  establish a patient in context" when it grants a patient scope).
- `user/`: a Practitioner (or PractitionerRole) user reaches what the scopes name; a
  Patient user reaches their own compartment; any other user (RelatedPerson, Person,
  none named) at most the launch patient's compartment, else nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from fhirserver.auth.access import Access
from fhirserver.auth.compartment import PATIENT, in_patient_compartment, patient_ids
from fhirserver.auth.scopes import Context, Interaction, Permission, Restriction, granting
from fhirserver.errors import FHIRError
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery

Resource = dict[str, Any]
# Tells the ids of the patients whose compartment a resource is in
# (`fhirserver.auth.compartment.patient_ids`, or the write path's own index entries).
PatientIds = Callable[[Resource], Collection[str]]

_WRITES = frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE})
# Users whose access the scopes alone decide.
_UNCONFINED_USERS = ("Practitioner", "PractitionerRole")


@dataclass(frozen=True)
class Alternative:
    """One way an interaction is allowed: on resources inside Patient `compartment`'s
    compartment (None: anywhere) that match every pair of `restriction`."""

    compartment: str | None
    restriction: Restriction = ()

    def covers(self, other: Alternative) -> bool:
        """Whether everything `other` allows, this allows too."""
        return self.compartment in (None, other.compartment) and set(self.restriction) <= set(
            other.restriction
        )


UNRESTRICTED = Alternative(None)


def alternatives(
    access: Access, interaction: Interaction, resource_type: str
) -> tuple[Alternative, ...]:
    """The alternatives under which `access` may do `interaction` on `resource_type`;
    none means refused. An alternative covered by another is left out, so an
    unrestricted grant comes back as `(UNRESTRICTED,)` alone."""
    kept: list[Alternative] = []
    for permission in granting(access.scopes, interaction, resource_type):
        candidate = _alternative(access, permission, resource_type)
        if candidate is None or any(k.covers(candidate) for k in kept):
            continue
        kept = [k for k in kept if not candidate.covers(k)] + [candidate]
    return tuple(kept)


def can(access: Access, interaction: Interaction, resource_type: str) -> bool:
    """Whether `access` may do `interaction` on some resources of `resource_type`."""
    return bool(alternatives(access, interaction, resource_type))


def may_write(
    access: Access, interaction: Interaction, resource: Resource, patient_ids_of: PatientIds
) -> bool:
    """Whether `access` may `interaction` (create, update, delete) this resource: some
    alternative allows its type, and the resource is inside that alternative's
    compartment and matches its restriction.

    Ask about the new content of a create or update, and about the stored version of an
    update or delete too: moving a resource out of a compartment, or overwriting one
    from another compartment, needs both sides allowed. Asked about a read or search, it
    tells whether the resource is visible: in the compartment, even if also in others'.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return False
    patients: Collection[str] | None = None
    writes = interaction in _WRITES
    for option in alternatives(access, interaction, resource_type):
        if option.compartment is not None:
            if patients is None:
                patients = patient_ids_of(resource)
            if option.compartment not in patients:
                continue
            # A patient-context write stays in that patient's record: it may not also
            # reference another patient through a compartment parameter (say, as
            # performer), which would put it in theirs.
            if writes and not set(patients) <= {option.compartment}:
                continue
        if option.restriction:
            query = restriction_query(resource_type, option.restriction)
            if query is None or not _matches(query, resource):
                continue
        return True
    return False


def restriction_query(resource_type: str, restriction: Restriction) -> SearchQuery | None:
    """A granular restriction as search criteria, or None when this server cannot
    evaluate it (an unknown parameter, a bad value, a result parameter such as
    `_count`): then the alternative grants nothing, rather than everything."""
    try:
        query = parse_search((resource_type,), restriction, strict=True)
    except FHIRError:
        return None
    # Every pair must have become one criterion; a result parameter would not filter.
    return query if len(query.clauses) == len(restriction) else None


def _matches(query: SearchQuery, resource: Resource) -> bool:
    try:
        return matches(query, resource)
    except FHIRError:
        # A chain or `_has` needs other resources, which a write check does not read.
        return False


def _alternative(access: Access, permission: Permission, resource_type: str) -> Alternative | None:
    """What `permission` reaches for `access`, or None when it reaches nothing."""
    if permission.context is Context.SYSTEM or (
        permission.context is Context.USER and _practitioner(access)
    ):
        return Alternative(None, permission.restriction)
    patient = permission.context is Context.PATIENT
    compartment = access.patient if patient else _user_patient(access)
    if not compartment or not in_patient_compartment(resource_type):
        return None
    return Alternative(compartment, permission.restriction)


def _user_reference(access: Access) -> tuple[str, str] | None:
    """The user's `fhirUser` as (type, id). Only a relative `Type/id` is understood: an
    absolute one may name a record on another server, whose id means someone else here."""
    user_type, _, user_id = (access.user or "").partition("/")
    if not user_type or not user_id or "/" in user_id:
        return None
    return user_type, user_id


def _practitioner(access: Access) -> bool:
    reference = _user_reference(access)
    return reference is not None and reference[0] in _UNCONFINED_USERS


def _user_patient(access: Access) -> str | None:
    """The one compartment a `user/` scope reaches for a user who is not a
    practitioner: a Patient user's own, else the launch patient's (None: nobody's)."""
    reference = _user_reference(access)
    if reference is not None and reference[0] == PATIENT:
        return reference[1]
    return access.patient


def may_run_visit(access: Access, resource: Resource, participants: Collection[str]) -> bool:
    """Whether `access` may start or end the virtual visit of `resource` (an
    Appointment, or a visit's Encounter): it must be allowed to update it, and be either
    a system client (a backend service, no user) or a practitioner user among its
    `participants` (references such as `Practitioner/7`). A patient never starts a visit
    through the API: patients join by meeting code."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return False
    if not may_write(access, Interaction.UPDATE, resource, patient_ids):
        return False
    if access.user is None:
        granted = granting(access.scopes, Interaction.UPDATE, resource_type)
        return any(permission.context is Context.SYSTEM for permission in granted)
    reference = _user_reference(access)
    if reference is None or reference[0] not in _UNCONFINED_USERS:
        return False
    return f"{reference[0]}/{reference[1]}" in participants
