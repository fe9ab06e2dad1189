"""Profiles found by canonical URL in the store (R4 references.html#canonical,
validation.html#profile), with the required bindings they make to ValueSets held in the
store expanded from their concept lists or from whole CodeSystems (R4
valueset.html#compose; terminologies.html#binding), on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.config import Settings
from fhirserver.interactions import crud
from fhirserver.interactions.ig_load import load_package
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.check import check_profile
from fhirserver.profiles.model import ProfileError
from fhirserver.profiles.package import Package
from fhirserver.profiles.source import ProfileSource
from fhirserver.storage.base import Store

OMB_RACE = "http://hl7.org/fhir/us/core/ValueSet/omb-race-category"
DOC_CATEGORY = "http://hl7.org/fhir/us/core/ValueSet/us-core-documentreference-category"
PROFILE = "http://example.org/StructureDefinition/bound"


def _bound_profile() -> dict[str, Any]:
    def element(name: str, value_set: str) -> dict[str, Any]:
        return {
            "id": f"Patient.{name}",
            "path": f"Patient.{name}",
            "min": 0,
            "max": "*",
            "definition": f"The patient's {name}, bound for the test.",
            "base": {"path": f"Patient.{name}", "min": 0, "max": "*"},
            "binding": {"strength": "required", "valueSet": value_set},
        }

    return {
        "resourceType": "StructureDefinition",
        "url": PROFILE,
        "name": "Bound",
        "status": "active",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "snapshot": {
            "element": [
                # sdf-3 and sdf-8b: a snapshot element has a definition and a base.
                {
                    "id": "Patient",
                    "path": "Patient",
                    "definition": "A patient.",
                    "min": 0,
                    "max": "*",
                    "base": {"path": "Patient", "min": 0, "max": "*"},
                },
                element("maritalStatus", f"{OMB_RACE}|3.1.0"),
                element("communication.language", DOC_CATEGORY),
            ]
        },
    }


async def test_required_bindings_to_value_sets_in_the_store(store: Store, us_core: Package) -> None:
    context = WriteContext().as_server()
    await load_package(store, context, us_core)
    await crud.create(store, context, "StructureDefinition", _bound_profile())
    profile = await ProfileSource().find(store, PROFILE)
    assert profile is not None and profile.unchecked == ()
    race = "urn:oid:2.16.840.1.113883.6.238"
    good = {
        "resourceType": "Patient",
        "maritalStatus": {"coding": [{"system": race, "code": "2106-3"}]},
    }
    assert check_profile(profile, good) == []
    bad = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": race, "code": "x"}]}}
    (issue,) = check_profile(profile, bad)
    assert issue.expression == "Patient.maritalStatus" and OMB_RACE in issue.diagnostics
    # A whole CodeSystem included (us-core-documentreference-category: clinical-note).
    system = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"
    note = {"coding": [{"system": system, "code": "clinical-note"}]}
    assert (
        check_profile(profile, {"resourceType": "Patient", "communication": [{"language": note}]})
        == []
    )


async def test_an_unknown_canonical_is_none(store: Store) -> None:
    assert await ProfileSource().find(store, "http://example.org/none") is None


async def test_a_profile_shipped_in_extensions(store: Store) -> None:
    # The store has none: the shipped one answers (extensions/ holds no resource
    # profile today, so one is handed in as extensions/ would give it).
    source = ProfileSource(shipped={PROFILE: _bound_profile()})
    profile = await source.find(store, PROFILE)
    assert profile is not None and profile.type == "Patient"
    # The shipped extension definition is no profile of a resource: refused clearly.
    extension = "http://fhirserver.dev/fhir/StructureDefinition/virtual-service"
    with pytest.raises(ProfileError, match="not a StructureDefinition of a resource type"):
        await ProfileSource().find(store, extension)


async def test_required_bindings_to_shipped_core_value_sets(store: Store) -> None:
    """A ValueSet the store does not hold but the server ships (an R4 core one) is used:
    the profile makes marital-status (extensible in R4) required."""
    profile_resource = _bound_profile()
    marital = profile_resource["snapshot"]["element"][1]
    marital["binding"]["valueSet"] = "http://hl7.org/fhir/ValueSet/marital-status"
    await crud.create(store, WriteContext().as_server(), "StructureDefinition", profile_resource)
    profile = await ProfileSource().find(store, PROFILE)
    assert profile is not None
    married = {"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}
    good = {"resourceType": "Patient", "maritalStatus": {"coding": [married]}}
    assert check_profile(profile, good) == []
    odd = {"system": "urn:example", "code": "M"}
    (issue,) = check_profile(
        profile, {"resourceType": "Patient", "maritalStatus": {"coding": [odd]}}
    )
    assert issue.expression == "Patient.maritalStatus"


async def test_compiled_profiles_are_bounded(store: Store) -> None:
    """Issue 20 point 8: a client names the canonical (meta.profile, $validate), so each
    `|version` asked for was compiled and kept for good; the cache keeps the most recently
    used up to its size (FHIRSERVER_PROFILE_CACHE_SIZE)."""
    source = ProfileSource(shipped={PROFILE: _bound_profile()})
    for number in range(3 * Settings().profile_cache_size):
        assert await source.find(store, f"{PROFILE}|{number}") is not None
    assert len(source._compiled) == Settings().profile_cache_size
    small = ProfileSource(shipped={PROFILE: _bound_profile()}, size=2)
    first = await small.find(store, f"{PROFILE}|a")
    await small.find(store, f"{PROFILE}|b")
    assert await small.find(store, f"{PROFILE}|a") is first  # used most recently: kept
    await small.find(store, f"{PROFILE}|c")
    assert list(small._compiled) == [(f"{PROFILE}|a", "shipped"), (f"{PROFILE}|c", "shipped")]
    with pytest.raises(ValueError, match="profile_cache_size"):
        Settings(profile_cache_size=0)
