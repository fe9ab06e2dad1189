"""Index values extracted from a resource at write time (R4 search.html#ptypes).

Each applicable parameter's compiled expression yields FHIR values; each value becomes
typed, normalized index entries by the parameter's type and the value's shape.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from fhirserver.errors import FHIRError
from fhirserver.search.params import (
    Evaluator,
    Registry,
    SearchParam,
    compile_expression,
    registry,
)
from fhirserver.search.query import (
    MAX_MICROS,
    MIN_MICROS,
    DateEntry,
    IndexEntry,
    NumberEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)
from fhirserver.search.time import date_range, to_micros

# Strings, tokens, URIs and reference URLs are indexed by their first INDEX_CUT
# characters (issue 20): one Patient with a 15 MB family name stored it four times over
# (150 MiB) and slowed every search of the parameter. 256: HAPI cuts strings at 200 and
# URIs at 254; the longest token, system, URI and reference in the R4 examples are 106,
# 81, 80 and 72 characters, so no real code, identifier or canonical URL is cut, only
# long texts. Searches compare values cut the same way, and what that may let in is
# confirmed on the resource (search/confirm.py).
INDEX_CUT = 256


def cut(text: str) -> str:
    return text[:INDEX_CUT]


def _short(text: str | None) -> bool:
    return text is None or len(text) <= INDEX_CUT


def _cut_or_none(text: str | None) -> str | None:
    return None if text is None else text[:INDEX_CUT]


def cut_entry(entry: IndexEntry) -> IndexEntry:
    """The entry as it is stored: its text values at most INDEX_CUT characters (most
    entries: nothing to cut, and nothing is copied)."""
    changes: dict[str, Any]
    if isinstance(entry, StringEntry):
        if len(entry.normalized) <= INDEX_CUT >= len(entry.exact):
            return entry
        changes = {"normalized": cut(entry.normalized), "exact": cut(entry.exact)}
    elif isinstance(entry, TokenEntry):
        if _short(entry.system) and _short(entry.code):
            return entry
        changes = {"system": _cut_or_none(entry.system), "code": _cut_or_none(entry.code)}
    elif isinstance(entry, UriEntry):
        changes = {"value": cut(entry.value)}
    elif isinstance(entry, ReferenceEntry):
        changes = {"url": _cut_or_none(entry.url)}
    elif isinstance(entry, NumberEntry):
        changes = {
            "system": _cut_or_none(entry.system),
            "code": _cut_or_none(entry.code),
            "unit": _cut_or_none(entry.unit),
        }
    else:
        return entry
    if all(getattr(entry, name) == value for name, value in changes.items()):
        return entry
    return replace(entry, **changes)


_NAME_PARTS = ("text", "family", "given", "prefix", "suffix")
_ADDRESS_PARTS = ("text", "line", "city", "district", "state", "postalCode", "country")


def normalize(text: str) -> str:
    """What string search compares (search.html#string): case and accents folded."""
    if text.isascii():
        # Nothing to decompose and no accents: folding ASCII is lowering it.
        return " ".join(text.lower().split())
    # Decompose first: compatibility forms (U+210D, a double-struck H) become letters
    # that case folding then knows.
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return " ".join("".join(c for c in folded if not unicodedata.combining(c)).split())


def index_entries(
    resource: dict[str, Any], known: Registry | None = None, whole: bool = False
) -> tuple[IndexEntry, ...]:
    """`known`: the search parameters to extract (default: the shipped ones). Text
    values are cut as the stores keep them (search/cut.py), unless `whole`: the
    in-memory matcher compares the values whole."""
    known = known or registry()
    resource_type = resource["resourceType"]
    entries: list[IndexEntry] = []
    for param, evaluate in known.extraction(resource_type).applicable(resource):
        try:
            values = evaluate(resource)
        except Exception:
            continue
        if param.type == "composite":
            entries.extend(_composite(known, param, values))
        else:
            family = _is_family(known, resource_type, param.code)
            for value in values:
                if family and isinstance(value, str):
                    value = {"family": value}
                entries.extend(entries_for(param.type, param.code, value))
    if not whole:
        entries = [cut_entry(entry) for entry in entries]
    return tuple(dict.fromkeys(entries))


@cache
def _is_family(known: Registry, resource_type: str, code: str) -> bool:
    """Whether a parameter is a HumanName.family, whose parts are searched one by one."""
    param = known.get(resource_type, code)
    return param is not None and (param.expression_for(resource_type) or "").endswith("name.family")


def _composite(known: Registry, param: SearchParam, elements: list[Any]) -> Iterator[IndexEntry]:
    """A group's components, only when each has a value: a composite search matches
    all its components within one group (search.html#composite), so a group without
    one (an Observation's code in code-value-date when it has a valueQuantity) never
    matches and is not indexed, as HAPI indexes composites only when whole. Of the
    Synthea set's index rows these were a fifth."""
    components = _components(known, param)
    for group, element in enumerate(elements):
        # Every component's values first: a group lacking one is not indexed, and the
        # one lacking is most often the last (an Observation's value in code-value-date
        # when it has a valueQuantity), so no entry is made for the others in vain.
        values: list[list[Any]] = []
        for _, _, evaluate in components:
            try:
                values.append(evaluate(element))
            except Exception:
                values.append([])
            if not values[-1]:
                break
        else:
            found: list[IndexEntry] = []
            for (code, kind, _), component_values in zip(components, values, strict=True):
                # Not the :text and :of-type entries a token also gets: a composite
                # takes no modifier (search.html#composite), so nothing would search them.
                parts = [
                    entry
                    for value in component_values
                    for entry in entries_for(kind, code, value, group)
                    if entry.param == code
                ]
                if not parts:
                    break
                found += parts
            else:
                yield from found


@cache
def _components(known: Registry, param: SearchParam) -> tuple[tuple[str, str, Evaluator], ...]:
    """(entry code, parameter type, compiled expression) of each of a composite's
    components that the registry defines."""
    found = []
    for position, component in enumerate(param.components):
        definition = known.by_url(component.definition)
        if definition is not None:
            try:
                evaluate = compile_expression(component.expression, relative=True)
            except Exception:
                # A stored SearchParameter FHIRPath cannot read: its groups are never
                # whole, so never indexed, and the resource's other entries stand.
                evaluate = _no_values
            found.append((f"{param.code}#{position}", definition.type, evaluate))
    return tuple(found)


def _no_values(*_: Any) -> list[Any]:
    return []


def entries_for(kind: str, code: str, value: Any, group: int | None = None) -> Iterator[IndexEntry]:
    if kind == "string":
        for text in _strings(value):
            yield StringEntry(code, normalize(text), text, group)
    elif kind == "token":
        yield from _tokens(code, value, group)
    elif kind == "date":
        span = _date_span(value)
        if span is not None:
            yield DateEntry(code, *span, group)
    elif kind in ("number", "quantity"):
        yield from _numbers(code, value, group)
    elif kind == "reference":
        yield from _references(code, value, group)
    elif kind == "uri" and isinstance(value, str):
        yield UriEntry(code, value, group)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        parts: tuple[str, ...] = (
            _NAME_PARTS if "family" in value or "given" in value else _ADDRESS_PARTS
        )
        for part in parts:
            item = value.get(part)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    yield text
                    if part == "family" and " " in text.strip():
                        # Parts of a family name are searched one by one (search.html#string).
                        yield from text.split()


def _tokens(code: str, value: Any, group: int | None) -> Iterator[IndexEntry]:
    if isinstance(value, bool):
        yield TokenEntry(code, None, "true" if value else "false", group)
    elif isinstance(value, str):
        yield TokenEntry(code, None, value, group)
    elif isinstance(value, dict):
        codings = value.get("coding") if "coding" in value else [value]
        for coding in codings if isinstance(codings, list) else []:
            if not isinstance(coding, dict):
                continue
            token = coding.get("code", coding.get("value"))
            system = coding.get("system")
            if token is not None or system is not None:
                yield TokenEntry(code, system, None if token is None else str(token), group)
            if isinstance(coding.get("display"), str):
                yield StringEntry(f"{code}:text", normalize(coding["display"]), coding["display"])
        if isinstance(value.get("text"), str):
            yield StringEntry(f"{code}:text", normalize(value["text"]), value["text"])
        identifier_type = value.get("type") if "value" in value else None
        if isinstance(identifier_type, dict) and isinstance(identifier_type.get("text"), str):
            # :text also covers Identifier.type.text (search.html#modifiers).
            text = identifier_type["text"]
            yield StringEntry(f"{code}:text", normalize(text), text)
        # Identifier.type + value, for :of-type (search.html#modifiers).
        for coding in (identifier_type or {}).get("coding", []):
            if isinstance(coding, dict) and "code" in coding:
                of_type = f"{coding['code']}|{value['value']}"
                yield TokenEntry(f"{code}:of-type", coding.get("system"), of_type, group)


def _date_span(value: Any) -> tuple[int, int] | None:
    try:
        if isinstance(value, str):
            low, high = date_range(value)
            return to_micros(low), to_micros(high)
        if isinstance(value, dict):
            if "start" in value or "end" in value:
                start = date_range(value["start"])[0] if "start" in value else None
                end = date_range(value["end"])[1] if "end" in value else None
                return (
                    to_micros(start) if start else MIN_MICROS,
                    to_micros(end) if end else MAX_MICROS,
                )
            events = [date_range(e) for e in value.get("event", []) if isinstance(e, str)]
            if events:
                return to_micros(min(e[0] for e in events)), to_micros(max(e[1] for e in events))
    except (FHIRError, TypeError, KeyError):
        return None
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def _numbers(code: str, value: Any, group: int | None) -> Iterator[IndexEntry]:
    number = _number(value)
    if number is not None:
        yield NumberEntry(code, number, number, group=group)
    elif isinstance(value, dict) and ("low" in value or "high" in value):
        low = _number((value.get("low") or {}).get("value"))
        high = _number((value.get("high") or {}).get("value"))
        units = value.get("low") or value.get("high") or {}
        yield NumberEntry(
            code,
            low if low is not None else float("-inf"),
            high if high is not None else float("inf"),
            units.get("system"),
            units.get("code"),
            units.get("unit"),
            group,
        )
    elif isinstance(value, dict):
        number = _number(value.get("value"))
        if number is not None:
            unit_code = value.get("code", value.get("currency"))
            yield NumberEntry(
                code, number, number, value.get("system"), unit_code, value.get("unit"), group
            )


def _references(code: str, value: Any, group: int | None) -> Iterator[IndexEntry]:
    if isinstance(value, str):
        # A canonical: found by its url, and by url|version (search.html#versions).
        yield ReferenceEntry(code, None, None, value.split("|")[0], group)
        if "|" in value:
            yield ReferenceEntry(code, None, None, value, group)
        return
    if not isinstance(value, dict):
        return
    reference = value.get("reference")
    if isinstance(reference, str) and not reference.startswith("#"):
        yield parse_reference(code, reference, group)
    identifier = value.get("identifier")
    if isinstance(identifier, dict):
        yield from _tokens(f"{code}:identifier", identifier, group)


def parse_reference(code: str, reference: str, group: int | None = None) -> ReferenceEntry:
    """A relative `Type/id` (or `Type/id/_history/n`) is local; anything else, such as
    an absolute URL to another server, is kept as a url."""
    parts = reference.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2 and all(parts):
        return ReferenceEntry(code, parts[0], parts[1], None, group)
    return ReferenceEntry(code, None, None, reference, group)
