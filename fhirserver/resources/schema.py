"""The official R4 JSON Schema (R4 json.html#schema, fhir.schema.json), read one way.

Shipped gzipped beside this module and loaded on first use, not at import. Its
`definitions` name every resource, data type and backbone element (Patient, HumanName,
Patient_Contact) and every primitive (string, positiveInt). A complex definition lists
its elements as `properties`: each an array or a single value, of the definition its
`$ref` names or, for choice forms (valueBoolean) and code enums, of a primitive spelled
inline. The structure check (`structure.py`) and FHIRPath Patch (`fhirpath_patch.py`,
`fhirpath_locate.py`) learn element types and cardinality here.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

SCHEMA_PATH = Path(__file__).with_name("fhir.schema.json.gz")
# The definition of an element that holds a whole resource (contained,
# Bundle.entry.resource): the resource's own resourceType names its definition.
RESOURCE_LIST = "ResourceList"
_INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a complex definition: its cardinality and what it holds."""

    is_array: bool
    # The definition its `$ref` names or, for a primitive the schema spells inline, that
    # primitive's JSON kind: boolean, decimal, integer or string.
    target: str
    inline: bool = False
    # The FHIR primitive type it holds (dateTime, positiveInt, code...); None if complex.
    primitive: str | None = None

    @property
    def definition(self) -> str | None:
        """The definition it holds; None for an inline primitive, which names none."""
        return None if self.inline else self.target


@cache
def r4_schema() -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads(gzip.decompress(SCHEMA_PATH.read_bytes()))
    return schema


def properties(definition: str) -> dict[str, Any]:
    """The properties of a definition; {} for a primitive or a name the schema lacks."""
    found: dict[str, Any] = r4_schema()["definitions"].get(definition, {}).get("properties", {})
    return found


@cache
def elements(definition: str) -> Mapping[str, Element]:
    """Each element of a definition by JSON name; {} for a primitive or an unknown name."""
    found = {}
    for name, schema in properties(definition).items():
        is_array = schema.get("type") == "array"
        target = schema.get("items", {}) if is_array else schema
        ref = target.get("$ref")
        if ref:
            held = ref.rsplit("/", 1)[1]
            primitive = held if primitive_kind(held) is not None else None
            found[name] = Element(is_array, held, primitive=primitive)
        else:
            kind = _inline_kind(target)
            found[name] = Element(is_array, kind, inline=True, primitive=_inline_type(name, kind))
    return found


def _inline_type(name: str, kind: str) -> str:
    """The primitive type of an element the schema spells inline: a choice form names it
    (valueDateTime: dateTime); otherwise it is a code whose values the schema enumerates."""
    for primitive in _PRIMITIVES_LONGEST_FIRST:
        if name.endswith(primitive[0].upper() + primitive[1:]) and name != primitive:
            return primitive
    return "code" if kind == "string" else kind


@cache
def primitive_pattern(primitive: str) -> str | None:
    """The official regular expression a primitive's value matches (on its JSON string
    form; numbers by their decimal digits); None where the schema gives none."""
    pattern = r4_schema()["definitions"].get(primitive, {}).get("pattern")
    return pattern if isinstance(pattern, str) else None


def _inline_kind(schema: dict[str, Any]) -> str:
    """Choice elements (valueBoolean, ...) spell their primitive inline, not as a $ref."""
    json_type = schema.get("type", "string")
    if json_type == "number":
        return "decimal" if "\\." in schema.get("pattern", "\\.") else "integer"
    return "boolean" if json_type == "boolean" else "string"


# The primitive types of R4 (datatypes.html#primitive).
_PRIMITIVES_LONGEST_FIRST = tuple(
    sorted(
        [
            "base64Binary",
            "boolean",
            "canonical",
            "code",
            "date",
            "dateTime",
            "decimal",
            "id",
            "instant",
            "integer",
            "markdown",
            "oid",
            "positiveInt",
            "string",
            "time",
            "unsignedInt",
            "uri",
            "url",
            "uuid",
            "xhtml",
        ],
        key=len,
        reverse=True,
    )
)


@cache
def primitive_kind(definition: str) -> str | None:
    """The JSON kind of a primitive definition; None for a complex one."""
    schema = r4_schema()["definitions"][definition]
    if "properties" in schema:
        return None
    if definition in _INTEGER_TYPES:
        return "integer"
    return {"boolean": "boolean", "number": "decimal"}.get(schema.get("type", ""), "string")


@cache
def choice_keys(definition: str, name: str) -> frozenset[str]:
    """The keys of choice element name[x] (valueQuantity, valueString, ...) in a definition.

    The schema does not mark choices; its keys for one share one description, which tells
    Observation.effective[x] from, say, participantEffectiveDescription beside
    participantEffective[x] in ResearchElementDefinition.
    """
    found = properties(definition)
    if name in found:
        return frozenset()
    keys = [key for key in found if key.startswith(name) and key[len(name) :][:1].isupper()]
    shared = Counter(found[key].get("description") for key in keys)
    return frozenset(key for key in keys if shared[found[key].get("description")] > 1)


def definition_of(parent: str | None, key: str, value: Any) -> str | None:
    """The definition of `value`, found as element `key` of a `parent` definition."""
    element = elements(parent).get(key) if parent else None
    target = element.definition if element else None
    if target == RESOURCE_LIST:
        kind = value.get("resourceType") if isinstance(value, dict) else None
        return kind if isinstance(kind, str) else None
    return target
