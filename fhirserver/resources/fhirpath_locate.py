"""The FHIRPath subset that FHIRPath Patch paths use (R4 fhirpatch.html), evaluated to
places rather than values.

FHIRPath engines (fhirpathpy) return values, but a patch needs places, so this small
evaluator resolves a path to locations (the containing object, the element name, the
list position):

    Patient.name               the resource-type prefix may be left out
    Patient.name[1].given[0]   an indexer after any step
    Patient.name.first()       first() and last()
    Patient.identifier.where(system = 'x' and value = 'y')
                               equality of a (dotted) element with a string, boolean or
                               integer literal, terms joined by `and`
    Observation.value          a choice element: matches valueQuantity, valueString, ...

Anything else is refused with UnsupportedPath (a NotSupported) rather than guessed at.
Each located element carries its R4 schema definition (Patient, HumanName,
Patient_Contact, the resourceType of a contained resource), read off the R4 JSON Schema
(`schema.py`) as the path is walked, which tells a choice element's keys apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fhirserver.errors import NotSupported
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.schema import choice_keys, definition_of, elements

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>[0-9]+)"
    r"|(?P<ident>[A-Za-z][A-Za-z0-9_]*)|(?P<punct>[.\[\]()=]))"
)
_ESCAPES = MappingProxyType({"t": "\t", "n": "\n", "r": "\r", "f": "\f"})

_Literal = str | bool | int


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Index:
    position: int


@dataclass(frozen=True)
class _Function:
    name: str  # first | last


@dataclass(frozen=True)
class _Where:
    terms: tuple[tuple[tuple[str, ...], _Literal], ...]


_Step = _Field | _Index | _Function | _Where


@dataclass(frozen=True)
class Node:
    """One element the path selected, and where it lives so that it can be changed."""

    value: Any
    parent: Node | None = None  # None for the resource itself
    key: str = ""
    index: int | None = None  # its position when `parent.value[key]` is a JSON array
    choice: str | None = None  # "value" when `key` is "valueQuantity" reached as `value`
    definition: str | None = None  # its R4 schema definition, None where unknown


class UnsupportedPath(NotSupported):
    """A path outside the subset this module evaluates."""

    def __init__(self, path: str, reason: str) -> None:
        # Kept apart so that a caller can put its own context before it.
        self.detail = f"path {path!r} is outside the FHIRPath subset supported here: {reason}"
        super().__init__(self.detail, expression=path)


def locate(resource: JSONObject, path: str) -> list[Node]:
    """The elements of `resource` that `path` selects, in document order."""
    return _evaluate(resource, _parse(path), path)


def _parse(path: str) -> list[_Step]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while path[position:].strip():
        match = _TOKEN.match(path, position)
        if match is None or match.lastgroup is None:
            raise UnsupportedPath(path, f"cannot read {path[position:].strip()[:12]!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    tokens.append(("end", ""))
    cursor = 0

    def peek() -> str:
        return tokens[cursor][1]

    def take(kind: str, text: str | None = None) -> str:
        nonlocal cursor
        got_kind, got = tokens[cursor]
        if got_kind != kind or text not in (None, got):
            wanted = repr(text) if text is not None else "a name" if kind == "ident" else kind
            raise UnsupportedPath(path, f"expected {wanted} at {got or 'the end'!r}")
        cursor += 1
        return got

    def number() -> int:
        text = take("number")
        # R4 integers are 32-bit; and int() refuses text thousands of digits long.
        if len(text) > 10:
            raise UnsupportedPath(path, f"{text[:10]}... is past any R4 integer")
        return int(text)

    def literal() -> _Literal:
        kind, text = tokens[cursor]
        if kind == "string":
            take(kind)
            return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", _unescape, text[1:-1])
        if kind == "number":
            return number()
        if text in ("true", "false"):
            return take(kind) == "true"
        raise UnsupportedPath(path, f"{text or 'the end'!r} is not a string, boolean or integer")

    def where() -> _Where:
        terms = []
        while True:
            names = [take("ident")]
            while peek() == ".":
                take("punct", ".")
                names.append(take("ident"))
            take("punct", "=")
            terms.append((tuple(names), literal()))
            if peek() != "and":
                return _Where(tuple(terms))
            take("ident", "and")

    steps: list[_Step] = []
    while True:
        name = take("ident")
        if peek() != "(":
            steps.append(_Field(name))
        elif name in ("first", "last"):
            take("punct", "(")
            take("punct", ")")
            steps.append(_Function(name))
        elif name == "where":
            take("punct", "(")
            steps.append(where())
            take("punct", ")")
        else:
            raise UnsupportedPath(path, f"{name}() is not one of first(), last(), where()")
        while peek() == "[":
            take("punct", "[")
            steps.append(_Index(number()))
            take("punct", "]")
        if tokens[cursor][0] == "end":
            return steps
        take("punct", ".")


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 5:
        return chr(int(code[1:], 16))
    return _ESCAPES.get(code, code)


def _evaluate(resource: JSONObject, steps: list[_Step], path: str) -> list[Node]:
    kind = resource.get("resourceType")
    nodes = [Node(resource, definition=kind if isinstance(kind, str) else None)]
    if steps[0] == _Field(str(resource.get("resourceType"))):
        steps = steps[1:]
    for step in steps:
        if isinstance(step, _Field):
            nodes = [child for node in nodes for child in _children(node, step.name, path)]
        elif isinstance(step, _Index):
            nodes = nodes[step.position : step.position + 1]
        elif isinstance(step, _Function):
            nodes = nodes[:1] if step.name == "first" else nodes[-1:]
        else:
            nodes = [node for node in nodes if _matches(node, step, path)]
    return nodes


def _children(node: Node, name: str, path: str) -> list[Node]:
    value = node.value
    if not isinstance(value, dict):
        # A primitive's id and extensions live in its `_name` twin, which is not modelled.
        if name in ("id", "extension"):
            raise UnsupportedPath(path, "the id or extension of a primitive value")
        return []
    if name == "resourceType":
        return []
    if name in value:
        keys, choice = [name], None
    elif node.definition and elements(node.definition):
        keys, choice = [key for key in value if key in choice_keys(node.definition, name)], name
    else:
        keys = [key for key in value if key.startswith(name) and key[len(name) :][:1].isupper()]
        choice = name
    children = []
    for key in keys:
        item = value[key]
        entries = enumerate(item) if isinstance(item, list) else [(None, item)]
        children += [
            Node(entry, node, key, i, choice, definition_of(node.definition, key, entry))
            for i, entry in entries
        ]
    return children


def _matches(node: Node, where: _Where, path: str) -> bool:
    for names, expected in where.terms:
        found = [node]
        for name in names:
            found = [child for item in found for child in _children(item, name, path)]
        # FHIRPath `=` compares whole collections: two codes are not `= 'x'`, nor is none.
        if len(found) != 1 or not _equal(found[0].value, expected):
            return False
    return True


def _equal(value: Any, expected: _Literal) -> bool:
    return isinstance(value, bool) == isinstance(expected, bool) and value == expected
