"""Index values at write time (R4 search.html#token for Identifier): every identifier a
resource's `identifier` parameter expression reaches, and nothing for types without one."""

from __future__ import annotations

from typing import Any

from fhirserver.search.extract import index_entries
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
