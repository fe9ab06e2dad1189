"""Index values at write time (R4 search.html#token for Identifier): every identifier a
resource's `identifier` parameter expression reaches, and nothing for types without one."""

from __future__ import annotations

from typing import Any

from fhirserver.search.extract import index_entries
from fhirserver.search.params import joined
from fhirserver.search.query import TokenEntry


def identifiers(resource: dict[str, Any]) -> tuple[TokenEntry, ...]:
    return tuple(
        e for e in index_entries(resource) if isinstance(e, TokenEntry) and e.param == "identifier"
    )


def test_identifiers_of_a_list_element() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:a", "value": "1"},
            {"value": "2"},
            {"system": "urn:a", "value": "1"},
        ],
    }
    assert identifiers(patient) == (
        TokenEntry("identifier", "urn:a", "1"),
        TokenEntry("identifier", None, "2"),
    )


def test_single_identifier_element() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "identifier": {"system": "s", "value": "b"},
    }
    assert identifiers(bundle) == (TokenEntry("identifier", "s", "b"),)


def test_every_path_of_a_union_expression() -> None:
    manifest = {
        "resourceType": "DocumentManifest",
        "masterIdentifier": {"system": "s", "value": "m"},
        "identifier": [{"system": "s", "value": "i"}],
    }
    assert set(identifiers(manifest)) == {
        TokenEntry("identifier", "s", "m"),
        TokenEntry("identifier", "s", "i"),
    }


def test_type_without_identifier_parameter() -> None:
    assert identifiers({"resourceType": "Binary", "contentType": "text/plain"}) == ()


def test_a_composite_is_indexed_only_with_every_component() -> None:
    """search.html#composite: the components match within one element, so an element
    missing one of them (here the value of code-value-date) is no composite value."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        "valueQuantity": {"value": 5.5, "system": "http://unitsofmeasure.org", "code": "mg"},
    }
    params = {entry.param.split(":")[0] for entry in index_entries(observation)}
    assert {"code-value-quantity#0", "code-value-quantity#1"} <= params
    assert not any(p.startswith(("code-value-date#", "code-value-concept#")) for p in params)


def test_a_composite_component_gets_no_modifier_entries() -> None:
    """A composite takes no modifier (search.html#composite): its token component is
    indexed as the token, not also for :text."""
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}], "text": "Sugar"},
        "valueQuantity": {"value": 5.5, "system": "http://unitsofmeasure.org", "code": "mg"},
    }
    params = {entry.param for entry in index_entries(observation)}
    assert "code-value-quantity#0" in params and "code:text" in params
    assert not any("#" in p and ":" in p for p in params)


_UNLEXABLE_COMPOSITE = {
    "resourceType": "SearchParameter",
    "url": "http://example.org/SearchParameter/code-odd",
    "name": "code-odd",
    "status": "active",
    "description": "a composite one of whose components FHIRPath cannot read",
    "code": "code-odd",
    "type": "composite",
    "base": ["Observation"],
    "expression": "Observation",
    "component": [
        {"definition": "http://hl7.org/fhir/SearchParameter/clinical-code", "expression": "code"},
        {"definition": "http://hl7.org/fhir/SearchParameter/clinical-code", "expression": "'x"},
    ],
}


def test_a_composite_with_an_unreadable_component_is_not_indexed_and_breaks_nothing() -> None:
    # A stored SearchParameter joins the registry at start-up: one whose component does
    # not compile must not make every write of its base type fail.
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
    }
    entries = index_entries(observation, joined([_UNLEXABLE_COMPOSITE]))
    assert not any(entry.param.startswith("code-odd") for entry in entries)
    assert TokenEntry("code", "http://loinc.org", "1-8") in entries
