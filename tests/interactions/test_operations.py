"""Operation inputs checked against their OperationDefinitions (R4 operations.html
#executing, operationdefinition.html: parameter name, use, min, max, type)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.errors import BadRequest, NotFound, Unprocessable
from fhirserver.interactions.operations import definition, input_parameters, instance_operations
from fhirserver.interactions.paths import Target, parse_path


def parameters(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(entries)}


START = definition("Appointment", "start-virtual-visit")
ENCOUNTER = {"resourceType": "Encounter", "status": "planned", "class": {"code": "VR"}}


def test_operations_come_from_the_definitions_in_extensions() -> None:
    assert sorted(op["code"] for op in instance_operations("Appointment")) == [
        "end-virtual-visit",
        "start-virtual-visit",
    ]
    assert [op["code"] for op in instance_operations("Encounter")] == ["end-virtual-visit"]
    assert [op["code"] for op in instance_operations("Patient")] == ["everything"]
    with pytest.raises(NotFound):
        definition("Encounter", "start-virtual-visit")


def test_inputs_by_name() -> None:
    given = input_parameters(
        START,
        parameters(
            {"name": "practitioner", "valueReference": {"reference": "Practitioner/1"}},
            {"name": "display", "valueString": "Dr One"},
        ),
    )
    assert given == {"practitioner": [{"reference": "Practitioner/1"}], "display": ["Dr One"]}
    assert input_parameters(START, None) == {}


@pytest.mark.parametrize(
    "body",
    [
        parameters({"name": "room", "valueString": "x"}),  # not an input
        parameters({"name": "encounter", "resource": ENCOUNTER}),  # an output
        parameters({"name": "display", "valueInteger": 3}),  # wrong type
        parameters(
            {"name": "display", "valueString": "a"}, {"name": "display", "valueString": "b"}
        ),
        # not a target the definition's targetProfile allows
        parameters({"name": "practitioner", "valueReference": {"reference": "Patient/1"}}),
        {"resourceType": "Patient"},  # not Parameters
    ],
)
def test_inputs_the_definition_does_not_allow_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(BadRequest):
        input_parameters(START, body)


@pytest.mark.parametrize(
    "body",
    [
        parameters({"name": "display"}),  # no value: inv-1
        # a local reference to nothing contained: ref-1
        parameters({"name": "practitioner", "valueReference": {"reference": "#contained"}}),
    ],
)
def test_inputs_breaking_an_r4_invariant_are_422(body: dict[str, Any]) -> None:
    """The Parameters itself is invalid R4 (conformance-rules.html#constraints): refused
    as any resource breaking an invariant is, before the definition is consulted."""
    with pytest.raises(Unprocessable):
        input_parameters(START, body)


def test_an_operation_path_names_the_instance_and_the_code() -> None:
    assert parse_path("Appointment/a1/$start-virtual-visit") == Target(
        "instance-operation", "Appointment", "a1", operation="start-virtual-visit"
    )
    with pytest.raises(NotFound):
        parse_path("Appointment/a1/$")
