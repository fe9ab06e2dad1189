"""Operations (R4 operations.html): their OperationDefinitions, loaded from extensions/,
and the check of a call's input Parameters against them.

The definitions are the truth: the CapabilityStatement lists them, and an input the
definition does not name, or names with another type or count, is refused with 400
before anything runs (operations.html#executing: "the server SHALL return an error").
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from fhirserver.conformance import load_resources
from fhirserver.errors import BadRequest, NotFound
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.definitions import is_resource_type
from fhirserver.resources.references import local_reference
from fhirserver.resources.validate import validate


@cache
def definitions() -> tuple[JSONObject, ...]:
    return tuple(
        resource
        for resource in load_resources("extensions")
        if resource.get("resourceType") == "OperationDefinition"
    )


def instance_operations(resource_type: str) -> list[JSONObject]:
    """The instance-level operations defined on `resource_type`."""
    return [
        definition
        for definition in definitions()
        if definition.get("instance") and resource_type in (definition.get("resource") or [])
    ]


def definition(resource_type: str, code: str) -> JSONObject:
    for found in instance_operations(resource_type):
        if found.get("code") == code:
            return found
    raise NotFound(f"No operation ${code} is defined on a {resource_type} instance")


def input_parameters(operation: JSONObject, body: JSONObject | None) -> dict[str, list[Any]]:
    """The call's inputs by name (each a list of values: value[x] or a resource), after
    checking them against the definition. `body`: the Parameters POSTed, None for none."""
    inputs = {p["name"]: p for p in operation.get("parameter") or [] if p.get("use") == "in"}
    given: dict[str, list[Any]] = {}
    if body is not None:
        validate(body, "Parameters")
        for parameter in body.get("parameter") or []:
            name = parameter.get("name")
            spec = inputs.get(name)
            where = f"Parameters.parameter.where(name = '{name}')"
            if spec is None:
                known = ", ".join(inputs) or "none"
                raise BadRequest(
                    f"${operation['code']} has no input parameter {name!r} (known: {known})",
                    expression=where,
                )
            given.setdefault(name, []).append(_value(spec, parameter, where))
    for name, spec in inputs.items():
        count = len(given.get(name, []))
        if count < int(spec.get("min", 0)):
            raise BadRequest(f"${operation['code']} needs the input {name!r}")
        top = spec.get("max", "*")
        if top != "*" and count > int(top):
            raise BadRequest(
                f"${operation['code']}: {name!r} may be given at most {top} time(s)",
                expression=f"Parameters.parameter.where(name = '{name}')",
            )
    return given


def _value(spec: Mapping[str, Any], parameter: JSONObject, where: str) -> Any:
    kind = str(spec.get("type", ""))
    present = [key for key in parameter if key.startswith("value") or key == "resource"]
    expected = "resource" if is_resource_type(kind) else f"value{kind[:1].upper()}{kind[1:]}"
    if present != [expected]:
        raise BadRequest(f"{spec['name']!r} takes {expected}", expression=where)
    value = parameter[expected]
    targets = [str(p).rsplit("/", 1)[-1] for p in spec.get("targetProfile") or []]
    if kind == "Reference" and targets:
        reference = local_reference(value)
        if reference is None or reference.split("/")[0] not in targets:
            raise BadRequest(
                f"{spec['name']!r} must reference a {' or '.join(targets)} as Type/id",
                expression=where,
            )
    return value
