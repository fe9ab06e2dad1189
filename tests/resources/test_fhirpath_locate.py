"""The FHIRPath subset FHIRPath Patch paths use (R4 fhirpatch.html), evaluated to places:
which elements a path selects, where each lives, and which paths are refused.

The first tests select through whole patches, as clients do; the rest call `locate`."""

from __future__ import annotations

import pytest

from fhirserver.errors import NotSupported
from fhirserver.resources import codec
from fhirserver.resources.fhirpath_locate import Node, UnsupportedPath, locate
from tests.resources.patch_helpers import PETER, op, patch, patient


@pytest.mark.parametrize(
    ("path", "expected_given"),
    [
        ("Patient.name[1].given[0]", [["Peter", "James"], ["Jimmy"]]),
        ("Patient.name.last().given", [["Peter", "James"], ["Jimmy"]]),
        ("Patient.name.first().given.last()", [["Peter", "Jimmy"], ["Jim"]]),
        ("Patient.name.where(use = 'usual').given.first()", [["Peter", "James"], ["Jimmy"]]),
        ("name.given[1]", [["Peter", "Jimmy"], ["Jim"]]),
    ],
)
def test_paths_select_one_element(path: str, expected_given: list[list[str]]) -> None:
    result = patch(PETER, op("replace", path, value={"valueString": "Jimmy"}))
    assert [name["given"] for name in result["name"]] == expected_given


def test_where_with_and_selects_by_two_elements() -> None:
    result = patch(
        PETER, op("delete", "Patient.identifier.where(system = 'urn:b' and value = '1')")
    )
    assert result["identifier"] == [
        {"system": "urn:a", "value": "1"},
        {"system": "urn:b", "value": "2"},
    ]


def test_where_with_a_boolean_literal() -> None:
    result = patch(
        PETER,
        op(
            "replace",
            "Patient.communication.where(preferred = true).language.text",
            value={"valueString": "Anglais"},
        ),
    )
    assert [c["language"]["text"] for c in result["communication"]] == ["French", "Anglais"]


@pytest.mark.parametrize(
    "path",
    [
        "Patient.name.exists()",
        "Patient.name.where(use != 'usual')",
        "Patient.name.where(use = 'usual' or use = 'official')",
        "Patient.name | Patient.identifier",
        "Patient.name[-1]",
        "Patient.name.where(use = %usual)",
        "Patient.name.where($this.use = 'usual')",
        "Patient.birthDate.extension",
        "Patient._birthDate",
        "Patient.name.given.where(length() = 5)",
        "Patient..name",
        "Patient.name[0",
    ],
)
def test_paths_outside_the_subset_are_refused_by_name(path: str) -> None:
    resource = patient(birthDate="1920-01-01", name=[{"use": "usual", "given": ["Jim"]}])
    with pytest.raises(NotSupported) as caught:
        patch(resource, op("delete", path))
    assert repr(path) in str(caught.value)


def test_a_located_element_knows_its_place_and_definition() -> None:
    (given,) = locate(PETER, "Patient.name.where(use = 'usual').given")
    assert (given.value, given.key, given.index, given.definition) == ("Jim", "given", 0, "string")
    name = given.parent
    assert name is not None and (name.key, name.index, name.definition) == ("name", 1, "HumanName")
    assert name.parent == Node(PETER, definition="Patient")


def test_the_resource_itself_has_no_parent() -> None:
    assert locate(PETER, "Patient") == [Node(PETER, definition="Patient")]


def test_a_choice_element_is_found_by_its_name() -> None:
    observation = {"resourceType": "Observation", "valueQuantity": {"value": codec.Decimal("1")}}
    (value,) = locate(observation, "value")
    assert (value.key, value.choice, value.definition) == ("valueQuantity", "value", "Quantity")
    assert locate(observation, "Observation.valueQuantity.value")[0].choice is None


def test_a_contained_resource_is_defined_by_its_type() -> None:
    resource = patient(contained=[{"resourceType": "Organization", "name": "x"}])
    (name,) = locate(resource, "contained.name")
    assert (name.value, name.parent and name.parent.definition) == ("x", "Organization")


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("Patient.identifier.where(value = '1').system", ["urn:a", "urn:b"]),
        ("Patient.identifier.where(system = 'urn:b')[1].value", ["2"]),
        ("Patient.name.where(use = 'maiden')", []),
        ("Patient.name[5]", []),
        ("Patient.communication.language.text.last()", ["English"]),
        # String literals take FHIRPath escapes.
        ("Patient.identifier.where(system = 'urn:\\u0061').value", ["1"]),
    ],
)
def test_selections(path: str, values: list[str]) -> None:
    assert [node.value for node in locate(PETER, path)] == values


def test_a_refused_path_says_why_apart_from_where_it_was_sent() -> None:
    with pytest.raises(UnsupportedPath) as caught:
        locate(PETER, "Patient.name.exists()")
    assert caught.value.detail == (
        "path 'Patient.name.exists()' is outside the FHIRPath subset supported here:"
        " exists() is not one of first(), last(), where()"
    )
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == "Patient.name.exists()"
