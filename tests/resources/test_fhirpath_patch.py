"""FHIRPath Patch (R4 fhirpatch.html, "FHIRPath Patch").

The add, insert, delete, replace and move cases on a Patient are the page's own examples
and the spec's published test cases (FHIR/fhir-test-cases, r4/patch/fhir-patch-tests.xml),
written here as FHIR JSON.
"""

from __future__ import annotations

import copy

import pytest

from fhirserver.errors import BadRequest, FHIRError, Unprocessable
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.fhirpath_patch import apply_fhirpath_patch
from tests.resources.patch_helpers import PETER, op, patch, patient


def identifiers(*values: str) -> list[JSONObject]:
    return [{"system": "http://example.org", "value": value} for value in values]


CONTACT = {"name": {"text": "a name"}, "gender": "male"}


# -- the spec's examples --------------------------------------------------------------


def test_no_operations_give_an_equal_copy() -> None:
    original = patient(birthDate="1920-01-01")
    result = apply_fhirpath_patch(original, {"resourceType": "Parameters"})
    assert result == original
    assert result is not original


def test_add_primitive() -> None:
    result = patch(
        patient(),
        op("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "1930-01-01"}),
    )
    assert result == patient(birthDate="1930-01-01")


def test_replace_primitive() -> None:
    result = patch(
        patient(birthDate="1920-01-01"),
        op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}),
    )
    assert result == patient(birthDate="1930-01-01")


def test_delete_primitive() -> None:
    assert patch(patient(birthDate="1920-01-01"), op("delete", "Patient.birthDate")) == patient()


def test_replace_nested_primitive() -> None:
    result = patch(
        patient(contact=[CONTACT]),
        op("replace", "Patient.contact[0].gender", value={"valueCode": "female"}),
        op("replace", "Patient.contact[0].name.text", value={"valueString": "the name"}),
    )
    assert result == patient(contact=[{"name": {"text": "the name"}, "gender": "female"}])


def test_delete_nested_primitive() -> None:
    result = patch(patient(contact=[CONTACT]), op("delete", "Patient.contact[0].gender"))
    assert result == patient(contact=[{"name": {"text": "a name"}}])


def test_delete_takes_out_the_object_it_leaves_empty() -> None:
    result = patch(patient(contact=[CONTACT]), op("delete", "Patient.contact[0].name.text"))
    assert result == patient(contact=[{"gender": "male"}])


def test_add_nested_primitive() -> None:
    result = patch(
        patient(contact=[{"name": {"text": "a name"}}]),
        op(
            "add", "Patient.contact[0]", name={"valueString": "gender"}, value={"valueCode": "male"}
        ),
    )
    assert result == patient(contact=[CONTACT])


def test_add_replace_and_delete_complex() -> None:
    married = {"text": "married"}
    added = patch(
        patient(),
        op(
            "add",
            "Patient",
            name={"valueString": "maritalStatus"},
            value={"valueCodeableConcept": married},
        ),
    )
    assert added == patient(maritalStatus=married)
    replaced = patch(
        patient(maritalStatus={"id": "1", **married}),
        op(
            "replace",
            "Patient.maritalStatus",
            value={"valueCodeableConcept": {"id": "2", "text": "not married"}},
        ),
    )
    assert replaced == patient(maritalStatus={"id": "2", "text": "not married"})
    assert patch(added, op("delete", "Patient.maritalStatus")) == patient()


def test_add_anonymous_type_from_parts() -> None:
    # Patient.contact repeats, so it arrives as a list; Patient.contact.name does not.
    value = {"part": [{"name": "name", "valueHumanName": {"text": "a name"}}]}
    result = patch(patient(), op("add", "Patient", name={"valueString": "contact"}, value=value))
    assert result == patient(contact=[{"name": {"text": "a name"}}])


def test_anonymous_type_parts_follow_the_cardinality_of_their_elements() -> None:
    value = {
        "part": [
            {"name": "telecom", "valueContactPoint": {"value": "555"}},
            {"name": "relationship", "valueCodeableConcept": {"text": "partner"}},
            {"name": "relationship", "valueCodeableConcept": {"text": "friend"}},
            {"name": "gender", "valueCode": "female"},
            {"name": "period", "part": [{"name": "start", "valueDateTime": "2012"}]},
        ]
    }
    result = patch(
        patient(contact=[CONTACT]),
        op("add", "Patient", name={"valueString": "contact"}, value=value),
        op("replace", "Patient.contact[0]", value=value),
        op("insert", "Patient.contact", index={"valueInteger": 0}, value=value),
    )
    contact = {
        "telecom": [{"value": "555"}],
        "relationship": [{"text": "partner"}, {"text": "friend"}],
        "gender": "female",
        "period": {"start": "2012"},
    }
    assert result == patient(contact=[contact, contact, contact])


def test_delete_the_last_item_removes_the_array() -> None:
    result = patch(
        patient(contact=[{"name": {"text": "a name"}}]), op("delete", "Patient.contact[0]")
    )
    assert result == patient()


def test_replace_inside_list_items() -> None:
    result = patch(
        patient(identifier=identifiers("value 1", "value 2")),
        op("replace", "Patient.identifier[0].value", value={"valueString": "value 2"}),
        op("replace", "Patient.identifier[1].value", value={"valueString": "value 1"}),
    )
    assert result == patient(identifier=identifiers("value 2", "value 1"))


def test_add_appends_to_an_existing_list() -> None:
    new = {"valueIdentifier": identifiers("value 3")[0]}
    result = patch(
        patient(identifier=identifiers("value 1", "value 2")),
        op("add", "Patient", name={"valueString": "identifier"}, value=new),
    )
    assert result == patient(identifier=identifiers("value 1", "value 2", "value 3"))


@pytest.mark.parametrize(
    ("index", "expected"),
    [(1, ["value 1", "value 3", "value 2"]), (0, ["value 3", "value 1", "value 2"])],
)
def test_insert_in_list(index: int, expected: list[str]) -> None:
    result = patch(
        patient(identifier=identifiers("value 1", "value 2")),
        op(
            "insert",
            "Patient.identifier",
            index={"valueInteger": index},
            value={"valueIdentifier": identifiers("value 3")[0]},
        ),
    )
    assert result == patient(identifier=identifiers(*expected))


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, ["value 2", "value 3"]), (1, ["value 1", "value 3"]), (2, ["value 1", "value 2"])],
)
def test_delete_from_list(index: int, expected: list[str]) -> None:
    result = patch(
        patient(identifier=identifiers("value 1", "value 2", "value 3")),
        op("delete", f"Patient.identifier[{index}]"),
    )
    assert result == patient(identifier=identifiers(*expected))


@pytest.mark.parametrize(
    ("moves", "expected"),
    [
        ([(3, 1)], "1423"),
        ([(3, 0)], "4123"),
        ([(3, 2)], "1243"),
        ([(0, 3)], "2341"),
        ([(1, 0), (2, 1)], "2314"),
        ([(3, 0), (3, 1), (3, 2)], "4321"),
    ],
)
def test_reorder_list(moves: list[tuple[int, int]], expected: str) -> None:
    operations = [
        op(
            "move",
            "Patient.identifier",
            source={"valueInteger": source},
            destination={"valueInteger": destination},
        )
        for source, destination in moves
    ]
    result = patch(
        patient(identifier=identifiers("value 1", "value 2", "value 3", "value 4")), *operations
    )
    assert result == patient(identifier=identifiers(*(f"value {n}" for n in expected)))


def test_add_where_nothing_matches_is_422() -> None:
    resource = patient(identifier=[{"use": "official", "value": "123"}])
    operation = op(
        "add",
        "Patient.identifier.where(use = 'official').period",
        name={"valueString": "end"},
        value={"valueDate": "2021-12-01"},
    )
    with pytest.raises(Unprocessable, match="selects nothing"):
        patch(resource, operation)


def test_add_a_repeating_element_that_is_absent_creates_a_list() -> None:
    # fhir-test-cases r4/patch "Operation on missing element #2": the output has one
    # identifier, which R4 JSON writes as an array of one.
    result = patch(
        patient(),
        op(
            "add",
            "Patient",
            name={"valueString": "identifier"},
            value={"valueIdentifier": identifiers("value 3")[0]},
        ),
    )
    assert result == patient(identifier=identifiers("value 3"))


@pytest.mark.parametrize(
    ("resource", "path", "name", "value", "expected"),
    [
        # A list item: HumanName.given repeats, HumanName.family does not.
        (
            patient(name=[{"family": "Chalmers"}]),
            "Patient.name[0]",
            "given",
            {"valueString": "Peter"},
            patient(name=[{"family": "Chalmers", "given": ["Peter"]}]),
        ),
        (
            patient(name=[{"given": ["Peter"]}]),
            "Patient.name.where(given = 'Peter')",
            "family",
            {"valueString": "Chalmers"},
            patient(name=[{"given": ["Peter"], "family": "Chalmers"}]),
        ),
        # A single complex element, and a backbone element in a list.
        (
            patient(maritalStatus={"text": "married"}),
            "Patient.maritalStatus",
            "coding",
            {"valueCoding": {"code": "M"}},
            patient(maritalStatus={"text": "married", "coding": [{"code": "M"}]}),
        ),
        (
            patient(contact=[{"gender": "male"}]),
            "Patient.contact[0]",
            "telecom",
            {"valueContactPoint": {"value": "555"}},
            patient(contact=[{"gender": "male", "telecom": [{"value": "555"}]}]),
        ),
        # A choice element reached by its name has the definition of its type.
        (
            {"resourceType": "Observation", "valueQuantity": {"value": 1}},
            "Observation.value",
            "extension",
            {"part": [{"name": "url", "valueUri": "http://example.org/x"}]},
            {
                "resourceType": "Observation",
                "valueQuantity": {"value": 1, "extension": [{"url": "http://example.org/x"}]},
            },
        ),
        # A contained resource has the definition its resourceType names.
        (
            patient(contained=[{"resourceType": "Organization", "name": "Acme"}]),
            "Patient.contained[0]",
            "alias",
            {"valueString": "ACME"},
            patient(
                contained=[{"resourceType": "Organization", "name": "Acme", "alias": ["ACME"]}]
            ),
        ),
        (
            patient(contained=[{"resourceType": "Practitioner", "id": "p"}]),
            "Patient.contained.where(id = 'p')",
            "active",
            {"valueBoolean": True},
            patient(contained=[{"resourceType": "Practitioner", "id": "p", "active": True}]),
        ),
        # No definition for a type R4 lacks: the value is set as given.
        (
            {"resourceType": "NotAType"},
            "NotAType",
            "identifier",
            {"valueIdentifier": {"value": "1"}},
            {"resourceType": "NotAType", "identifier": {"value": "1"}},
        ),
    ],
)
def test_add_follows_the_cardinality_of_the_located_parent(
    resource: JSONObject, path: str, name: str, value: JSONObject, expected: JSONObject
) -> None:
    result = patch(resource, op("add", path, name={"valueString": name}, value=value))
    assert result == expected


def test_add_of_a_choice_element_takes_the_type_of_its_value() -> None:
    observation = {"resourceType": "Observation", "status": "final"}
    quantity = {"value": codec.Decimal("1.50"), "unit": "mg"}
    text = {"valueString": "high"}
    result = patch(
        observation,
        op("add", "Observation", name={"valueString": "value"}, value={"valueQuantity": quantity}),
        op(
            "add",
            "Observation",
            name={"valueString": "effective"},
            value={"valueDateTime": "2021-12-01"},
        ),
    )
    assert result == {**observation, "valueQuantity": quantity, "effectiveDateTime": "2021-12-01"}
    with pytest.raises(Unprocessable, match="already has 'valueQuantity'; replace changes it"):
        patch(result, op("add", "Observation", name={"valueString": "value"}, value=text))


def test_a_choice_path_does_not_match_a_sibling_that_shares_its_prefix() -> None:
    # participantEffectiveDescription is an element of its own, not participantEffective[x].
    characteristic = {
        "participantEffectiveDescription": "at enrolment",
        "participantEffectiveDateTime": "2020-01-01",
    }
    resource = {"resourceType": "ResearchElementDefinition", "characteristic": [characteristic]}
    result = patch(
        resource,
        op(
            "replace",
            "ResearchElementDefinition.characteristic.participantEffective",
            value={"valueDateTime": "2021-01-01"},
        ),
    )
    assert result["characteristic"] == [
        {**characteristic, "participantEffectiveDateTime": "2021-01-01"}
    ]


def test_consecutive_operations() -> None:
    resource = patient(
        id="example", contact=[{"name": {"family": "du Marché", "given": ["Bénédicte"]}}]
    )
    result = patch(
        resource,
        op(
            "add", "Patient.contact[0]", name={"valueString": "gender"}, value={"valueCode": "male"}
        ),
        op(
            "add",
            "Patient",
            name={"valueString": "contact"},
            value={"part": [{"name": "gender", "valueCode": "male"}]},
        ),
    )
    assert result["contact"] == [
        {"name": {"family": "du Marché", "given": ["Bénédicte"]}, "gender": "male"},
        {"gender": "male"},
    ]


# -- operations at the places paths select (paths alone: test_fhirpath_locate.py) --------


def test_delete_of_nothing_changes_nothing() -> None:
    assert patch(PETER, op("delete", "Patient.name.where(use = 'maiden')")) == PETER


def test_choice_element_is_reached_by_its_name_and_renamed_on_replace() -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "valueQuantity": {"value": codec.Decimal("1.50"), "unit": "mg"},
    }
    bigger = patch(
        observation,
        op("replace", "Observation.value.value", value={"valueDecimal": codec.Decimal("2.50")}),
    )
    # The decimal's written precision survives the patch.
    assert codec.dumps(bigger["valueQuantity"]) == b'{"value":2.50,"unit":"mg"}'
    text = patch(observation, op("replace", "Observation.value", value={"valueString": "high"}))
    assert text == {"resourceType": "Observation", "status": "final", "valueString": "high"}


def test_primitive_extensions_stay_with_their_list_items() -> None:
    extension = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    resource = patient(name=[{"given": ["Peter", "James"], "_given": [None, extension]}])
    result = patch(resource, op("delete", "Patient.name[0].given[0]"))
    assert result["name"] == [{"given": ["James"], "_given": [extension]}]
    moved = patch(
        resource,
        op(
            "move",
            "Patient.name[0].given",
            source={"valueInteger": 1},
            destination={"valueInteger": 0},
        ),
    )
    assert moved["name"] == [{"given": ["James", "Peter"], "_given": [extension, None]}]


def test_original_and_parameters_are_not_mutated() -> None:
    resource = copy.deepcopy(PETER)
    value = {"valueHumanName": {"given": ["Pierre"]}}
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            op("add", "Patient", name={"valueString": "name"}, value=value),
            op("delete", "Patient.identifier[0]"),
            op("replace", "Patient.name[0].family", value={"valueString": "Chalmers1"}),
            op(
                "move",
                "Patient.communication",
                source={"valueInteger": 1},
                destination={"valueInteger": 0},
            ),
            op(
                "insert",
                "Patient.name[0].given",
                index={"valueInteger": 0},
                value={"valueString": "P"},
            ),
        ],
    }
    sent = copy.deepcopy(parameters)
    result = apply_fhirpath_patch(resource, parameters)
    assert resource == PETER
    assert parameters == sent
    assert result["name"][0] == {
        "use": "official",
        "family": "Chalmers1",
        "given": ["P", "Peter", "James"],
    }
    result["name"][2]["given"].append("changed")
    assert parameters == sent


# -- errors ----------------------------------------------------------------------------------

GOOD = op("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "1930-01-01"})


def test_a_body_that_is_not_parameters_is_400() -> None:
    with pytest.raises(BadRequest, match="Parameters"):
        apply_fhirpath_patch(patient(), {"resourceType": "Patient"})


def _without(operation: JSONObject, part: str) -> JSONObject:
    return {**operation, "part": [p for p in operation["part"] if p["name"] != part]}


@pytest.mark.parametrize(
    ("operation", "says"),
    [
        (_without(GOOD, "type"), "needs a 'type' part"),
        (_without(GOOD, "path"), "needs a 'path' part"),
        (op("upsert", "Patient.birthDate"), "type must be one of"),
        (op("add", "Patient", value={"valueDate": "1930-01-01"}), "add needs a 'name' part"),
        (op("add", "Patient", name={"valueString": "birthDate"}), "add needs a 'value' part"),
        (op("replace", "Patient.birthDate"), "replace needs a 'value' part"),
        (op("insert", "Patient.name", value={"valueString": "x"}), "insert needs a 'index' part"),
        (op("move", "Patient.name", source={"valueInteger": 0}), "needs a 'destination' part"),
        (
            op("insert", "Patient.name", index={"valueString": "1"}, value={"valueString": "x"}),
            "integer",
        ),
        (
            op("insert", "Patient.name", index={"valueBoolean": True}, value={"valueString": "x"}),
            "integer",
        ),
        (
            op("insert", "Patient.name", index={"valueInteger": 3}, value={"valueString": "x"}),
            "outside 0..2",
        ),
        (
            op("move", "Patient.name", source={"valueInteger": 2}, destination={"valueInteger": 0}),
            "outside 0..1",
        ),
        (op("replace", "Patient.birthDate", value={}), "no value"),
        (
            op("replace", "Patient.birthDate", value={"valueDate": "x", "valueString": "x"}),
            "more than one",
        ),
        (
            op("add", "Patient", name={"valueString": "a.b"}, value={"valueString": "x"}),
            "not an element name",
        ),
        (op("delete", "Patient.birthDate", indx={"valueInteger": 1}), "unknown part 'indx'"),
        ({"name": "op", "part": GOOD["part"]}, "named 'operation'"),
    ],
)
def test_malformed_operations_are_400_naming_the_operation(
    operation: JSONObject, says: str
) -> None:
    with pytest.raises(BadRequest, match=says) as caught:
        patch(PETER, GOOD, operation)
    assert "operation 2 (counting from 1)" in str(caught.value)
    assert caught.value.issues[0].expression == "Parameters.parameter[1]"


@pytest.mark.parametrize(
    ("operation", "says"),
    [
        (op("replace", "Patient.birthDate", value={"valueDate": "1930-01-01"}), "selects nothing"),
        (
            op(
                "add",
                "Patient.contact",
                name={"valueString": "gender"},
                value={"valueCode": "male"},
            ),
            "nothing",
        ),
        (op("delete", "Patient.name"), "selects 2 elements"),
        (
            op("replace", "Patient.identifier.where(system = 'urn:b')", value={"valueString": "x"}),
            "2 elements",
        ),
        (
            op(
                "add", "Patient.name[0]", name={"valueString": "family"}, value={"valueString": "x"}
            ),
            "already has",
        ),
        (
            op(
                "add",
                "Patient.name[0].family",
                name={"valueString": "x"},
                value={"valueString": "x"},
            ),
            "primitive",
        ),
        (
            op(
                "insert",
                "Patient.name[0].family",
                index={"valueInteger": 0},
                value={"valueString": "x"},
            ),
            "list",
        ),
        (
            op(
                "move",
                "Patient.name.given",
                source={"valueInteger": 0},
                destination={"valueInteger": 1},
            ),
            "list",
        ),
        (
            op("insert", "Patient.telecom", index={"valueInteger": 0}, value={"valueString": "x"}),
            "no list",
        ),
        (op("delete", "Patient"), "the resource itself"),
        (
            op("add", "Patient", name={"valueString": "nickname"}, value={"valueString": "x"}),
            "'nickname', which Patient has no element for",
        ),
        (
            op("add", "Patient", name={"valueString": "deceased"}, value={"valueString": "x"}),
            r"'deceasedString'; Patient.deceased\[x\] is one of deceasedBoolean, deceasedDateTime",
        ),
        (
            op(
                "add",
                "Patient",
                name={"valueString": "deceased"},
                value={"part": [{"name": "x", "valueString": "y"}]},
            ),
            "'deceased'; Patient.deceased",
        ),
    ],
)
def test_paths_that_miss_their_target_are_422(operation: JSONObject, says: str) -> None:
    with pytest.raises(Unprocessable, match=says) as caught:
        patch(PETER, operation)
    assert caught.value.status == 422
    assert caught.value.issues[0].expression == operation["part"][1]["valueString"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"resourceType": "Parameters", "parameter": {"name": "operation"}},
        {"resourceType": "Parameters", "parameter": [None]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [1]}]},
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "operation", "part": [{"name": ["type"]}]}],
        },
        {
            "resourceType": "Parameters",
            "parameter": [op("add", "Patient", name={"part": [{}]}, value={"part": 1})],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                op("add", "Patient", name={"valueString": "x"}, value={"part": [{"name": 1}]})
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                op("replace", "Patient.name[99999999999999999999]", value={"valueString": "x"})
            ],
        },
        {
            "resourceType": "Parameters",
            "parameter": [
                op("replace", "Patient.name.where(use = 'a\\", value={"valueString": "x"})
            ],
        },
    ],
)
def test_garbage_is_an_error_outcome_never_a_crash(parameters: JSONObject) -> None:
    with pytest.raises(FHIRError):
        apply_fhirpath_patch(PETER, parameters)
