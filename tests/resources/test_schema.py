"""The R4 JSON Schema read one way (R4 json.html#schema): element cardinality
and types, primitive kinds, choice elements, and the definition of a nested resource."""

from __future__ import annotations

import pytest

from fhirserver.resources.schema import (
    Element,
    choice_keys,
    definition_of,
    elements,
    primitive_kind,
)


def test_elements_name_their_cardinality_and_definition() -> None:
    patient = elements("Patient")
    assert patient["name"] == Element(is_array=True, target="HumanName")
    assert patient["birthDate"] == Element(is_array=False, target="date", primitive="date")
    assert patient["contact"].definition == "Patient_Contact"
    assert elements("Patient_Contact")["telecom"] == Element(True, "ContactPoint")


@pytest.mark.parametrize(
    ("definition", "name", "kind"),
    [
        ("Observation", "valueBoolean", "boolean"),
        ("Observation", "valueInteger", "integer"),
        ("Observation", "valueString", "string"),
        ("Patient", "gender", "string"),  # a code enum
    ],
)
def test_inline_primitives_have_a_kind_and_no_definition(
    definition: str, name: str, kind: str
) -> None:
    element = elements(definition)[name]
    assert (element.target, element.inline, element.definition) == (kind, True, None)


@pytest.mark.parametrize(
    ("definition", "name", "primitive"),
    [
        ("Observation", "valueDateTime", "dateTime"),
        ("Observation", "valueTime", "time"),
        ("Extension", "valueUnsignedInt", "unsignedInt"),
        ("Extension", "valueBase64Binary", "base64Binary"),
        ("Patient", "gender", "code"),  # a code enum
        ("Observation", "issued", "instant"),
        ("Observation", "code", None),
    ],
)
def test_elements_name_the_primitive_type_they_hold(
    definition: str, name: str, primitive: str | None
) -> None:
    """What the structure walk checks each value's format against (datatypes.html)."""
    assert elements(definition)[name].primitive == primitive


@pytest.mark.parametrize("definition", ["string", "NotAType"])
def test_primitives_and_unknown_names_have_no_elements(definition: str) -> None:
    assert elements(definition) == {}


@pytest.mark.parametrize(
    ("definition", "kind"),
    [
        ("positiveInt", "integer"),
        ("unsignedInt", "integer"),
        ("decimal", "decimal"),
        ("boolean", "boolean"),
        ("date", "string"),
        ("HumanName", None),
    ],
)
def test_primitive_kind(definition: str, kind: str | None) -> None:
    assert primitive_kind(definition) == kind


def test_choice_keys_share_a_description() -> None:
    assert choice_keys("Patient", "deceased") == {"deceasedBoolean", "deceasedDateTime"}
    # participantEffectiveDescription is an element of its own beside the choice.
    assert choice_keys("ResearchElementDefinition_Characteristic", "participantEffective") == {
        "participantEffectiveDateTime",
        "participantEffectiveDuration",
        "participantEffectivePeriod",
        "participantEffectiveTiming",
    }
    assert choice_keys("Patient", "name") == frozenset()


def test_a_nested_resource_is_defined_by_its_resource_type() -> None:
    assert definition_of("Bundle_Entry", "resource", {"resourceType": "Patient"}) == "Patient"
    assert definition_of("Bundle_Entry", "resource", {}) is None
    assert definition_of("Patient", "name", {"family": "x"}) == "HumanName"
    assert definition_of("Patient", "gender", "male") is None
    assert definition_of("Patient", "nickname", "x") is None
    assert definition_of(None, "name", {}) is None
