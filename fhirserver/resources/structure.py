"""R4 JSON structure (json.html, datatypes.html), checked against the official R4 JSON
Schema and the required elements and choice groups derived from the R4
StructureDefinitions (scripts/derive_cardinality.py). For every element at any depth,
including contained and nested resources:
- the element exists in R4;
- a primitive has its JSON kind (boolean, number, whole number, string) and matches its
  type's official regular expression; a date, dateTime or instant is a real calendar
  date; an integer fits 32 bits; base64Binary decodes;
- objects and arrays are not empty, and null only holds a place in a primitive array
  whose `_element` twin carries the extension for it;
- every element of minimum cardinality 1 is present (a primitive's `_element` twin with
  an extension counts: json.html#primitive), and a choice element (`value[x]`) has at
  most one form;
- a nested resource names an R4 resource type.

A fast verdict (`is_sound`) comes first; only a resource it does not find sound is
walked again by `report_structure`, which names each issue. The two are the whole
structural validation: pydantic models (fhir.resources) are not run, since they reject
nothing the walk accepts (tests/resources/test_structure_verdicts.py, on the official
examples and their mutations) at four times its cost.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from types import MappingProxyType
from typing import Any

from fhirserver.errors import Issue
from fhirserver.resources.definitions import is_resource_type, r4b_model
from fhirserver.resources.derived import load
from fhirserver.resources.schema import (
    RESOURCE_LIST,
    Element,
    elements,
    primitive_kind,
    primitive_pattern,
)

# Whether a JSON value has each primitive kind (bool is an int in Python, not in JSON).
_KIND_CHECKS: Mapping[str, Callable[[Any], bool]] = MappingProxyType(
    {
        "boolean": lambda v: isinstance(v, bool),
        "decimal": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
    }
)
# R4 integer is 32-bit signed (datatypes.html#integer); positiveInt and unsignedInt too.
_INT32 = range(-(2**31), 2**31)
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
_CALENDAR_TYPES = frozenset({"date", "dateTime", "instant"})
_DATE_PART = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass
class StructureReport:
    issues: list[Issue] = field(default_factory=list)
    # Nested resource types the R4 JSON Schema must check (R4-only or reshaped in R4B).
    needs_schema: bool = False


@dataclass(frozen=True, slots=True)
class _Rules:
    """What a definition's objects must hold beyond their elements' own types."""

    required: tuple[str, ...]
    # Each choice form's key -> its choice element (valueString -> value).
    choice_of: Mapping[str, str]
    choices: Mapping[str, tuple[str, ...]]


def check_structure(resource_type: str, resource: dict[str, Any]) -> StructureReport:
    if is_sound(resource_type, resource):
        return StructureReport()
    return report_structure(resource_type, resource)


def is_sound(resource_type: str, resource: dict[str, Any]) -> bool:
    """The fast verdict (below): True only where `report_structure` finds nothing."""
    return _sound(resource_type)(resource)


def report_structure(resource_type: str, resource: dict[str, Any]) -> StructureReport:
    """The walk that names each issue where it is."""
    report = StructureReport()
    _check_object(resource_type, resource, resource_type, report)
    return report


# The fast verdict: one closure per definition and per element, built once, that says
# only whether a value is sound, without paths or messages. Most resources written are
# sound, and for them this is the whole walk, at about half the reporting walk's cost
# (the bench's 2 kB Patient: 97 -> 46 us). True only where the reporting walk below finds no
# issue and asks for no schema check; False also where it is unsure (a null in an array,
# a nested resource type the R4B models lack), and the reporting walk then decides.
_Sound = Callable[[Any], bool]


@cache
def _sound(definition: str) -> _Sound:
    listed = elements(definition)
    rules = _rules(definition)
    checks = {name: _sound_element(element) for name, element in listed.items()}
    # Each required element's keys, its `_element` twins included.
    required = tuple(
        tuple(k for form in rules.choices.get(name, (name,)) for k in (form, f"_{form}"))
        for name in rules.required
    )
    # Each choice form's key, and its twin's, -> (its choice element, the form).
    choice_forms = {
        key: (group, form) for form, group in rules.choice_of.items() for key in (form, f"_{form}")
    }

    def sound(value: Any) -> bool:
        if type(value) is not dict or not value:
            return False
        chosen: dict[str, str] | None = None
        for name, item in value.items():
            check = checks.get(name)
            if check is None or not check(item):
                return False
            if choice_forms:
                found = choice_forms.get(name)
                if found is not None:
                    if chosen is None:
                        chosen = {}
                    if chosen.setdefault(found[0], found[1]) != found[1]:
                        return False
        for keys in required:
            for key in keys:
                if key in value:
                    break
            else:
                return False
        return True

    return sound


def _sound_element(element: Element) -> _Sound:
    item = _sound_item(element)
    if not element.is_array:
        return item

    def sound_array(value: Any) -> bool:
        if type(value) is not list or not value:
            return False
        # A loop, not all() over a generator: a third less per array here.
        for entry in value:  # noqa: SIM110
            if entry is None or not item(entry):
                return False
        return True

    return sound_array


def _sound_item(element: Element) -> _Sound:
    target = element.target
    if target == RESOURCE_LIST:
        return _sound_resource
    kind = primitive_kind(target) if target not in _KIND_CHECKS else target
    if kind is None:
        return _LaterSound(target)
    is_kind = _KIND_CHECKS[kind]
    primitive = element.primitive
    if primitive is None:
        return is_kind
    pattern = _compiled(primitive)
    if kind == "string" and primitive not in _CALENDAR_TYPES and primitive != "base64Binary":
        if pattern is None:
            return is_kind
        matches = pattern.fullmatch
        return lambda value: type(value) is str and matches(value) is not None
    return lambda value: is_kind(value) and _primitive_problem(primitive, value) is None


class _LaterSound:
    """A complex element's check, built when first called: definitions refer to
    themselves (Extension.extension), so building them eagerly would not end."""

    __slots__ = ("_check", "_definition")

    def __init__(self, definition: str) -> None:
        self._definition = definition
        self._check: _Sound | None = None

    def __call__(self, value: Any) -> bool:
        check = self._check
        if check is None:
            check = self._check = _sound(self._definition)
        return check(value)


def _sound_resource(value: Any) -> bool:
    kind = value.get("resourceType") if type(value) is dict else None
    return (
        isinstance(kind, str)
        and is_resource_type(kind)
        and r4b_model(kind) is not None
        and _sound(kind)(value)
    )


@cache
def _rules(definition: str) -> _Rules:
    row = load("cardinality.json.gz").get(definition, {})
    choices = {name: tuple(keys) for name, keys in row.get("choices", {}).items()}
    choice_of = {key: name for name, keys in choices.items() for key in keys}
    return _Rules(tuple(row.get("required", ())), MappingProxyType(choice_of), choices)


def _check_object(
    definition: str, value: dict[str, Any], path: str, report: StructureReport
) -> None:
    listed = elements(definition)
    for name, item in value.items():
        where = f"{path}.{name}"
        element = listed.get(name)
        if element is None:
            report.issues.append(Issue("Unknown element in R4", "structure", expression=where))
            continue
        if item is None:
            report.issues.append(Issue("null is not a value", "structure", expression=where))
        elif not element.is_array:
            _check_value(element, item, where, report)
        elif not isinstance(item, list):
            report.issues.append(Issue("must be a JSON array", "structure", expression=where))
        elif not item:
            report.issues.append(Issue("an array may not be empty", "structure", expression=where))
        else:
            twin = name[1:] if name.startswith("_") else f"_{name}"
            for index, entry in enumerate(item):
                if entry is not None:
                    _check_value(element, entry, f"{where}[{index}]", report)
                elif twin not in value:
                    report.issues.append(
                        Issue(
                            f"null only holds a place for an entry of {twin}",
                            "structure",
                            expression=f"{where}[{index}]",
                        )
                    )
    _check_cardinality(definition, value, path, report)


def _check_cardinality(
    definition: str, value: dict[str, Any], path: str, report: StructureReport
) -> None:
    rules = _rules(definition)
    if rules.choice_of:
        seen: dict[str, set[str]] = {}
        for key in value:
            group = rules.choice_of.get(key.removeprefix("_"))
            if group is not None:
                seen.setdefault(group, set()).add(key.removeprefix("_"))
        for group, keys in seen.items():
            if len(keys) > 1:
                report.issues.append(
                    Issue(
                        f"{group}[x] takes one form, not {len(keys)} ({', '.join(sorted(keys))})",
                        "structure",
                        expression=f"{path}.{group}[x]",
                    )
                )
    for name in rules.required:
        forms = rules.choices.get(name, (name,))
        if not any(form in value or f"_{form}" in value for form in forms):
            shown = f"{name}[x]" if name in rules.choices else name
            report.issues.append(
                Issue(
                    f"{shown} is required (minimum cardinality 1)",
                    "required",
                    expression=f"{path}.{shown}",
                )
            )


def _check_value(element: Element, value: Any, path: str, report: StructureReport) -> None:
    target = element.target
    if target == RESOURCE_LIST:
        _check_resource(value, path, report)
        return
    kind = primitive_kind(target) if target not in _KIND_CHECKS else target
    if kind is None:
        if not isinstance(value, dict):
            report.issues.append(
                Issue(f"must be a JSON object ({target})", "structure", expression=path)
            )
        elif not value:
            report.issues.append(Issue("an object may not be empty", "structure", expression=path))
        else:
            _check_object(target, value, path, report)
    elif not _KIND_CHECKS[kind](value):
        wanted = "a whole number" if kind == "integer" else f"a JSON {kind}"
        report.issues.append(
            Issue(f"must be {wanted} ({target}), not {value!r:.40}", "structure", expression=path)
        )
    elif element.primitive is not None:
        problem = _primitive_problem(element.primitive, value)
        if problem is not None:
            report.issues.append(Issue(problem, "structure", expression=path))


def _primitive_problem(primitive: str, value: Any) -> str | None:
    """What is wrong with a value of the right JSON kind for its primitive type."""
    if primitive == "decimal" or isinstance(value, bool):
        return None  # any JSON number (JSON has no NaN or infinity); booleans: kind enough
    if primitive in _INTEGER_TYPES and value not in _INT32:
        return f"{value} does not fit a 32-bit {primitive}"
    text = str(value)
    pattern = _compiled(primitive)
    if pattern is not None and pattern.fullmatch(text) is None:
        return f"{text!r:.60} is not a valid {primitive}"
    if primitive in _CALENDAR_TYPES:
        return _calendar_problem(primitive, text)
    if primitive == "base64Binary":
        try:
            base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            return "is not valid base64"
    return None


@cache
def _compiled(primitive: str) -> re.Pattern[str] | None:
    pattern = primitive_pattern(primitive)
    # The expressions are XML Schema's (datatypes.html#primitive): `\s` is space, tab,
    # CR and LF only, so a no-break space is a character of a string, not whitespace.
    return re.compile(pattern, re.ASCII) if pattern is not None else None


def _calendar_problem(primitive: str, text: str) -> str | None:
    """The schema's expressions allow February 31st; the calendar does not."""
    found = _DATE_PART.match(text)
    if found is None:
        return None  # a year, or a year and month: the expression said enough
    year, month, day = (int(part) for part in found.groups())
    try:
        date(year, month, day)
    except ValueError:
        return f"{text!r:.40} is not a date of the calendar ({primitive})"
    return None


def _check_resource(value: Any, path: str, report: StructureReport) -> None:
    kind = value.get("resourceType") if isinstance(value, dict) else None
    if not isinstance(kind, str) or not is_resource_type(kind):
        report.issues.append(
            Issue("must be a resource with an R4 resourceType", "structure", expression=path)
        )
        return
    if r4b_model(kind) is None:
        report.needs_schema = True
    _check_object(kind, value, path, report)
