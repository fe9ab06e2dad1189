"""SMART App Launch 2.2.0, scopes-and-launch-context.html: the scope strings of the
spec's own examples, v1 and v2, the union of scopes, ignored scopes, and narrowing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fhirserver.auth.scopes import (
    Context,
    Interaction,
    Permission,
    Scopes,
    allows,
    narrow,
    parse_permission,
    parse_scopes,
    restrictions,
)
from tests.auth.letters import LAB, C, D, R, S, U

VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def granted(scope: str, resource_type: str) -> set[Interaction]:
    scopes = parse_scopes(scope)
    return {i for i in Interaction if allows(scopes, i, resource_type)}


def test_quick_start_scopes() -> None:
    """Section "Quick Start": patient/*.rs reads and searches any type; user/*.cruds does all."""
    assert granted("patient/*.rs", "Observation") == {R, S}
    assert granted("patient/*.rs", "Immunization") == {R, S}
    assert granted("user/*.cruds", "Appointment") == {C, R, U, D, S}
    quick = parse_scopes(
        "openid fhirUser launch launch/patient offline_access online_access launch/encounter"
    )
    assert (quick.openid, quick.fhir_user, quick.launch, quick.launch_patient) == (
        True,
        True,
        True,
        True,
    )
    assert (quick.launch_encounter, quick.offline_access, quick.online_access) == (
        True,
        True,
        True,
    )
    assert quick.permissions == () and quick.ignored == ()


def test_patient_specific_examples() -> None:
    """Section "Patient-specific scopes" table: each letter grants its own interaction only;
    "write access does not imply read access"."""
    assert granted("patient/Observation.rs", "Observation") == {R, S}
    assert granted("patient/Patient.r", "Patient") == {R}
    assert granted("patient/Observation.c", "Observation") == {C}
    assert granted("patient/Observation.cu", "Observation") == {C, U}
    assert granted("patient/Observation.rs", "Condition") == set()
    assert parse_permission("patient/Patient.r") == Permission(
        Context.PATIENT, "Patient", frozenset({R})
    )


def test_user_and_system_examples() -> None:
    """Section "User-level scopes" and "System-level scopes" tables."""
    assert granted("user/Appointment.cruds", "Appointment") == {C, R, U, D, S}
    assert granted("system/Encounter.cud", "Encounter") == {C, U, D}
    assert granted("system/*.rs", "Patient") == {R, S}
    assert parse_permission("system/*.rs") == Permission(Context.SYSTEM, "*", frozenset({R, S}))


def test_v1_scopes_mean_their_v2_equivalents() -> None:
    """Section "Scopes for requesting clinical data": v1 .read => .rs, .write => .cud,
    .* => .cruds; a v1 scope still reads back as written."""
    assert parse_permission("patient/Observation.read") == parse_permission(
        "patient/Observation.rs"
    )
    assert parse_permission("user/Encounter.write") == parse_permission("user/Encounter.cud")
    assert parse_permission("system/*.*") == parse_permission("system/*.cruds")
    assert granted("patient/*.read", "Observation") == {R, S}
    assert granted("user/*.write", "Observation") == {C, U, D}
    assert str(parse_scopes("patient/Observation.read launch/patient")) == (
        "patient/Observation.read launch/patient"
    )
    v1 = parse_permission("patient/Observation.read")
    assert v1 is not None and v1.v2() == "patient/Observation.rs"


def test_compounded_and_expanded_scopes_are_equivalent() -> None:
    """Section "Scope Equivalence": Observation.rs is interchangeable with Observation.r
    Observation.s; the union of several scopes is what they grant together."""
    for resource_type in ("Observation", "Condition"):
        assert granted("patient/Observation.rs", resource_type) == granted(
            "patient/Observation.r patient/Observation.s", resource_type
        )
    union = "patient/AllergyIntolerance.rs patient/AllergyIntolerance.cud"
    assert granted(union, "AllergyIntolerance") == {C, R, U, D, S}
    assert granted("patient/Observation.r user/Observation.c", "Observation") == {C, R}


def test_granular_restriction_from_the_spec() -> None:
    """Section "Finer-grained resource constraints using search parameters": the spec's
    laboratory-Observations scope, parsed and written back unchanged."""
    scope = f"patient/Observation.rs?category={LAB}"
    permission = parse_permission(scope)
    assert permission is not None
    assert permission.restriction == (("category", LAB),)
    assert permission.interactions == frozenset({R, S})
    assert permission.v2() == scope
    assert restrictions(parse_scopes(scope), S, "Observation") == ((("category", LAB),),)
    both = parse_permission("patient/Observation.rs?status=final&category=laboratory")
    assert both is not None
    assert both.restriction == (("category", "laboratory"), ("status", "final"))
    encoded = parse_permission("user/Observation.s?code=http://loinc.org|1234-5%20x")
    assert encoded is not None and encoded.restriction == (("code", "http://loinc.org|1234-5 x"),)


def test_union_of_restricted_and_unrestricted_scopes() -> None:
    """Each scope narrows only itself: two restricted scopes are two alternatives; an
    unrestricted one for the same interaction makes the interaction unrestricted."""
    scopes = parse_scopes(
        f"patient/Observation.rs?category={LAB} patient/Observation.rs?category={VITALS} "
        "patient/Observation.r"
    )
    assert restrictions(scopes, S, "Observation") == (
        (("category", LAB),),
        (("category", VITALS),),
    )
    assert restrictions(scopes, R, "Observation") == ((),)
    assert restrictions(scopes, C, "Observation") == ()
    assert restrictions(scopes, S, "Condition") == ()


def test_unknown_and_malformed_scopes_are_ignored_and_reported() -> None:
    """Section "Scope requests with undefined or out of order interactions MAY be ignored":
    this server ignores them (granting nothing) and says which."""
    odd = [
        "patient/Observation.dus",  # out of order: the spec's own example
        "patient/Observation.sr",
        "patient/Observation.x",
        "patient/Observation.",
        "patient/observation.rs",  # not a resource type
        "patient/Foo.rs",
        "admin/Observation.rs",
        "patient/Observation.read?category=laboratory",  # restrictions are v2 only
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?=laboratory",
        "launch/diagnosticreport",
        "profile",
        "Observation.rs",
    ]
    scopes = parse_scopes(" ".join([*odd, "patient/Condition.rs", *odd]))
    assert scopes.ignored == tuple(odd)
    assert [str(p) for p in scopes.permissions] == ["patient/Condition.rs"]
    assert str(scopes) == "patient/Condition.rs"
    assert granted(" ".join(odd), "Observation") == set()


def test_narrowing_keeps_what_both_allow() -> None:
    """An approval screen narrows a request to what the client is registered for:
    a covered scope is kept as written (v1 stays v1), others are cut down."""
    registered = parse_scopes("patient/*.rs launch/patient openid fhirUser")
    requested = parse_scopes(
        "patient/Observation.read patient/Condition.cruds user/Patient.rs "
        "launch/patient offline_access bogus"
    )
    approved = narrow(registered, requested)
    assert str(approved) == "patient/Observation.read patient/Condition.rs launch/patient"
    assert approved.ignored == ("bogus",)


def test_narrowing_a_wildcard_request_to_a_restricted_grant() -> None:
    """The overlap of `patient/*.cruds` and a laboratory-only Observation scope is
    the laboratory-only scope."""
    approved = narrow(
        parse_scopes(f"patient/Observation.rs?category={LAB}"), parse_scopes("patient/*.cruds")
    )
    assert str(approved) == f"patient/Observation.rs?category={LAB}"
    # A user can narrow further, never widen.
    assert str(narrow(approved, parse_scopes("patient/Observation.r"))) == (
        f"patient/Observation.r?category={LAB}"
    )
    assert narrow(approved, parse_scopes("patient/Observation.c user/Observation.rs")) == Scopes()


_ITEMS = st.sampled_from(
    [
        "patient/*.rs",
        "patient/*.cruds",
        "patient/Observation.read",
        "patient/Observation.cu",
        "patient/Observation.rs?category=laboratory",
        "patient/Observation.s?status=final",
        "patient/Condition.write",
        "user/*.r",
        "user/Observation.rs",
        "system/*.*",
        "openid",
        "launch/patient",
        "offline_access",
    ]
)


@given(st.lists(_ITEMS, max_size=5), st.lists(_ITEMS, max_size=5))
def test_narrowing_never_grants_more_than_either_side(
    have_items: list[str], want_items: list[str]
) -> None:
    """Whatever narrowing keeps, both the grant and the request allowed, under a
    restriction at least as tight as one of each."""
    have, want = parse_scopes(" ".join(have_items)), parse_scopes(" ".join(want_items))
    approved = narrow(have, want)
    assert approved.flags <= have.flags & want.flags
    for permission in approved.permissions:
        for side in (have, want):
            assert any(
                p.context == permission.context
                and p.resource_type in ("*", permission.resource_type)
                and permission.interactions <= p.interactions
                and set(p.restriction) <= set(permission.restriction)
                for p in side.permissions
            )
