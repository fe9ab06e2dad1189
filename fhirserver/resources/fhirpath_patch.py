"""FHIRPath Patch (R4 fhirpatch.html): apply a Parameters resource of patch operations.

Each `operation` parameter names a FHIRPath path and what to do there: add, insert,
delete, replace or move. Every operation's parts are checked before anything changes;
then each path is resolved to places by `fhirpath_locate.py` (the FHIRPath subset patch
paths use), and the operations are applied in order to a copy of the resource.

Each located element carries its R4 schema definition (`schema.py`). So `add` knows the
element it adds: it appends to a list already there, creates a one-item list for an
absent repeating element (Patient.identifier) and sets a single value otherwise; a choice
name (Observation `value`) becomes name + the value's type (valueQuantity); a name the
parent's definition lacks is refused. An anonymous type sent as parts (Patient.contact)
gets its repeating elements as lists the same way. Where no definition is known (a
resourceType the schema lacks), the value is set as given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fhirserver.errors import BadRequest, NotSupported, Unprocessable
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.fhirpath_locate import Node, UnsupportedPath, locate
from fhirserver.resources.schema import choice_keys, elements

_NEEDS = MappingProxyType(
    {
        "add": ("name", "value"),
        "insert": ("value", "index"),
        "delete": (),
        "replace": ("value",),
        "move": ("source", "destination"),
    }
)
_PARTS = frozenset({"type", "path", "name", "value", "index", "source", "destination"})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass(frozen=True)
class _Anonymous:
    """An anonymous type sent as parts: each element name with the values given for it."""

    elements: dict[str, list[Any]]


def apply_fhirpath_patch(resource: JSONObject, parameters: JSONObject) -> JSONObject:
    """Returns a new dict; never mutates `resource`."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise BadRequest("A FHIRPath Patch body must be a Parameters resource")
    operations = parameters.get("parameter", [])
    if not isinstance(operations, list):
        raise BadRequest("Parameters.parameter must be a JSON array")
    checked = [_Operation.read(number, entry) for number, entry in enumerate(operations, 1)]
    result: JSONObject = _copy(resource)
    for operation in checked:
        _apply(result, operation)
    return result


class _Operation:
    """One `operation` parameter, its parts checked before anything is changed."""

    def __init__(self, number: int, parameter: Any) -> None:
        self.number = number  # counted from 1, as the messages say
        self.type = self.path = ""
        self.parts: dict[str, JSONObject] = {}
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise self.bad("each parameter must be named 'operation'")
        parts = parameter.get("part")
        for part in parts if isinstance(parts, list) else ():
            name = part.get("name") if isinstance(part, dict) else None
            if not isinstance(name, str):
                raise self.bad("a part has no name")
            if name not in _PARTS:
                raise self.bad(f"unknown part {name!r}; known: {', '.join(sorted(_PARTS))}")
            if name in self.parts:
                raise self.bad(f"part {name!r} is given more than once")
            self.parts[name] = part

    @classmethod
    def read(cls, number: int, parameter: Any) -> _Operation:
        operation = cls(number, parameter)
        operation.type = operation.string("type")
        if operation.type not in _NEEDS:
            raise operation.bad(f"type must be one of {', '.join(_NEEDS)}, not {operation.type!r}")
        operation.path = operation.string("path")
        if not operation.path.strip():
            raise operation.bad("path is empty")
        for name in _NEEDS[operation.type]:
            if name not in operation.parts:
                raise operation.bad(f"{operation.type} needs a {name!r} part")
        for name in ("index", "source", "destination"):
            if name in operation.parts:
                operation.integer(name)
        if operation.type == "add" and not _NAME.fullmatch(operation.string("name")):
            raise operation.bad(f"name {operation.string('name')!r} is not an element name")
        if "value" in operation.parts:
            operation.value()
        return operation

    def _primitive(self, name: str) -> Any:
        part = self.parts.get(name)
        if part is None:
            raise self.bad(f"{self.type or 'the operation'} needs a {name!r} part")
        return _part_value(part, self)[0]

    def string(self, name: str) -> str:
        value = self._primitive(name)
        if not isinstance(value, str):
            raise self.bad(f"{name} must be a string, not {value!r:.40}")
        return value

    def integer(self, name: str) -> int:
        value = self._primitive(name)
        # bool is an int in Python, but a valueBoolean is no valueInteger.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.bad(f"{name} must be an integer, not {value!r:.40}")
        return value

    def value(self) -> tuple[Any, str | None]:
        return _part_value(self.parts["value"], self)

    def _says(self, detail: str) -> str:
        return f"FHIRPath Patch operation {self.number} (counting from 1): {detail}"

    def bad(self, detail: str) -> BadRequest:
        return BadRequest(self._says(detail), expression=f"Parameters.parameter[{self.number - 1}]")

    def unprocessable(self, detail: str) -> Unprocessable:
        detail = f"{self.type} path {self.path!r} {detail}"
        return Unprocessable(self._says(detail), expression=self.path)

    def unsupported(self, error: UnsupportedPath) -> NotSupported:
        return NotSupported(self._says(error.detail), expression=self.path)


def _part_value(part: JSONObject, operation: _Operation) -> tuple[Any, str | None]:
    """A part's content and, for value[x], its type name ("HumanName" for valueHumanName).

    Nested parts give an _Anonymous, which _shape turns into JSON once the definition of
    the element it becomes is known.
    """
    typed = [key for key in part if key.startswith("value") and key[5:6].isupper()]
    if len(typed) > 1:
        raise operation.bad(f"part {part.get('name')!r} has more than one value[x]")
    if typed:
        return _copy(part[typed[0]]), typed[0][5:]
    if isinstance(part.get("resource"), dict):
        return _copy(part["resource"]), None
    nested = part.get("part")
    if not isinstance(nested, list) or not nested:
        raise operation.bad(f"part {part.get('name')!r} has no value[x], resource or parts")
    grouped: dict[str, list[Any]] = {}
    for child in nested:
        name = child.get("name") if isinstance(child, dict) else None
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise operation.bad(f"a part inside {part.get('name')!r} has no element name")
        grouped.setdefault(name, []).append(_part_value(child, operation)[0])
    return _Anonymous(grouped), None


def _shape(value: Any, definition: str | None) -> Any:
    """JSON for a value; an anonymous type's repeating elements become lists."""
    if not isinstance(value, _Anonymous):
        return value
    listed = elements(definition) if definition else {}
    shaped: JSONObject = {}
    for name, values in value.elements.items():
        element = listed.get(name)
        items = [_shape(item, element.definition if element else None) for item in values]
        # Where the definition is unknown, a name given more than once repeats.
        shaped[name] = items if (element and element.is_array) or len(items) > 1 else items[0]
    return shaped


def _copy(value: Any) -> Any:
    # Not copy.deepcopy: a codec.Decimal must stay itself, with its text.
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _apply(resource: JSONObject, operation: _Operation) -> None:
    try:
        nodes = locate(resource, operation.path)
    except UnsupportedPath as error:
        raise operation.unsupported(error) from None
    if operation.type == "delete":
        # The spec deletes "if found": a path that selects nothing is not an error.
        if nodes:
            _delete(_single(nodes, operation))
    elif operation.type in ("insert", "move"):
        _reorder(nodes, operation)
    elif operation.type == "replace":
        node = _single(nodes, operation)
        value, value_type = operation.value()
        _replace(node, _shape(value, node.definition), value_type)
    else:
        _add(_single(nodes, operation), operation)


def _single(nodes: list[Node], operation: _Operation) -> Node:
    if not nodes:
        raise operation.unprocessable("selects nothing")
    if len(nodes) > 1:
        raise operation.unprocessable(f"selects {len(nodes)} elements, not one")
    if nodes[0].parent is None and operation.type != "add":
        raise operation.unprocessable("selects the resource itself")
    return nodes[0]


def _add(target: Node, operation: _Operation) -> None:
    name, (value, value_type) = operation.string("name"), operation.value()
    container = target.value
    if not isinstance(container, dict):
        raise operation.unprocessable(f"selects a primitive value, which cannot hold {name!r}")
    parent = target.definition
    listed = elements(parent) if parent else {}
    key, choice = name, frozenset[str]()
    if parent and listed and name not in listed:
        # A choice element is named without its type: the value part's type completes it.
        choice = choice_keys(parent, name)
        if not choice:
            raise operation.unprocessable(f"adds {name!r}, which {parent} has no element for")
        key = name + (value_type or "")
        if key not in choice:
            allowed = ", ".join(sorted(choice))
            raise operation.unprocessable(f"adds {key!r}; {parent}.{name}[x] is one of {allowed}")
    taken = sorted(choice & container.keys())
    if taken:
        raise operation.unprocessable(f"already has {taken[0]!r}; replace changes it")
    element = listed.get(key)
    repeats = element is not None and element.is_array
    value = _shape(value, element.definition if element else None)
    existing = container.get(key)
    if isinstance(existing, list):
        _edit_list(container, key, lambda items, twin: items.append(None if twin else value))
    elif existing is None:
        container[key] = [value] if repeats else value
    else:
        raise operation.unprocessable(f"already has {key!r}; replace changes it")


def _replace(node: Node, value: Any, value_type: str | None) -> None:
    assert node.parent is not None
    container = node.parent.value
    if node.index is not None:
        container[node.key][node.index] = value
    elif node.choice and value_type:
        # Replacing a valueQuantity with a valueString renames the choice element.
        del container[node.key]
        container[node.choice + value_type] = value
    else:
        container[node.key] = value


def _delete(node: Node) -> None:
    assert node.parent is not None
    container, key, index = node.parent.value, node.key, node.index
    if index is None:
        del container[key]
        container.pop("_" + key, None)
    else:
        _edit_list(container, key, lambda items, twin: items.pop(index))
    # FHIR JSON has no empty objects: take out what the deletion left empty, up to the root.
    if not container and node.parent.parent is not None:
        _delete(node.parent)


def _reorder(nodes: list[Node], operation: _Operation) -> None:
    """insert and move: the path names one whole list; the parts name positions in it."""
    if not nodes:
        raise operation.unprocessable("selects no list (add creates one)")
    first = nodes[0]
    container = first.parent.value if first.parent is not None else None
    items = container.get(first.key) if isinstance(container, dict) else None
    if (
        container is None
        or not isinstance(items, list)
        or len(items) != len(nodes)
        or any(node.parent is not first.parent or node.key != first.key for node in nodes)
    ):
        raise operation.unprocessable("does not select one whole list")
    size = len(items)

    def position(name: str, limit: int) -> int:
        value = operation.integer(name)
        if not 0 <= value <= limit:
            raise operation.bad(f"{name} {value} is outside 0..{limit} (the list has {size})")
        return value

    if operation.type == "insert":
        at, value = position("index", size), _shape(operation.value()[0], first.definition)
        _edit_list(
            container, first.key, lambda items, twin: items.insert(at, None if twin else value)
        )
    else:
        source, destination = position("source", size - 1), position("destination", size - 1)
        _edit_list(
            container, first.key, lambda items, _: items.insert(destination, items.pop(source))
        )


def _edit_list(container: JSONObject, key: str, edit: Callable[[list[Any], bool], Any]) -> None:
    """Change a list, and its `_key` twin too where a primitive list keeps extensions there."""
    items = container[key]
    twin = container.get("_" + key)
    aligned = twin if isinstance(twin, list) and len(twin) == len(items) else None
    edit(items, False)
    if aligned is not None:
        edit(aligned, True)
    # FHIR JSON has no empty arrays, and a twin of nothing but nulls says nothing.
    if not items:
        del container[key]
    if aligned is not None and all(entry is None for entry in aligned):
        del container["_" + key]
