"""Derive the terminology tables the server ships from the official R4 definitions.

R4 terminologies.html#binding, valueset.html#compose, codesystem.html#hierarchy.
Reads profiles-resources, profiles-types and valuesets from the R4 definitions folder
(../shared/data/r4/definitions by default) and writes, gzipped and byte-for-byte
reproducible, into fhirserver/resources/derived/ (or --out):

- bindings.json.gz: for every resource, data type and backbone element, each JSON key
  (choice elements under their JSON names, valueQuantity...) that holds a complex value
  or carries a binding: [definition it holds, FHIR type, binding strength, ValueSet].
  A data type's own bindings (ContactPoint.system) sit under the data type, so they
  apply wherever it is used.
- valuesets.json.gz: every ValueSet expanded from the CodeSystems in the definitions
  (system -> codes), and those that cannot be expanded here with the reason.
- codesystems.json.gz: for each hierarchical CodeSystem, each code's parents.

The server never reads the definitions itself: it loads only these files.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEFINITIONS = ROOT.parent / "shared" / "data" / "r4" / "definitions"
DEFAULT_OUT = ROOT / "fhirserver" / "resources" / "derived"
# The definition that holds a whole resource (contained, Bundle.entry.resource): the
# value's resourceType names the real one.
RESOURCE = "Resource"
# What a primitive's `_name` twin holds: id and extensions (R4 json.html#primitive).
ELEMENT = "Element"
_FHIRPATH_TYPE = "http://hl7.org/fhirpath/System."

Code = tuple[str, str]


class NotExpandable(Exception):
    """A ValueSet whose codes cannot be listed from the definitions alone."""


def _entries(definitions: Path, name: str) -> Iterator[dict[str, Any]]:
    bundle = orjson.loads(gzip.decompress((definitions / f"{name}.json.gz").read_bytes()))
    for entry in bundle.get("entry", []):
        yield entry["resource"]


def _canonical(url: str) -> str:
    """A canonical without its |version: the server knows one version of each."""
    return url.split("|", 1)[0]


# ---- bindings by element -------------------------------------------------------------


def binding_table(structures: Iterable[dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    table: dict[str, dict[str, list[Any]]] = {}
    for structure in structures:
        if structure.get("derivation") != "specialization" or structure["kind"] == "logical":
            continue
        if structure["kind"] == "primitive-type":
            continue
        _add_structure(structure["snapshot"]["element"], table)
    # No StructureDefinition describes Element in R4's profiles-types; a primitive's
    # twin holds its extensions.
    table.setdefault(ELEMENT, {"extension": ["Extension", "Extension", None, None]})
    return table


def _add_structure(elements: list[dict[str, Any]], table: dict[str, dict[str, list[Any]]]) -> None:
    paths = {element["path"] for element in elements}
    parents = {path.rsplit(".", 1)[0] for path in paths if "." in path}
    for element in elements:
        path = element["path"]
        if "." not in path:
            continue
        owner, name = path.rsplit(".", 1)
        keys = table.setdefault(owner, {})
        binding = element.get("binding") or {}
        strength = binding.get("strength") if "valueSet" in binding else None
        value_set = _canonical(binding["valueSet"]) if strength else None
        if path in parents:
            keys[name] = [path, "BackboneElement", strength, value_set]
            continue
        reference = element.get("contentReference")
        if reference:
            keys[name] = [reference.split("#", 1)[1], "BackboneElement", strength, value_set]
            continue
        codes = [t["code"] for t in element.get("type", [])]
        for code in codes:
            if code.startswith(_FHIRPATH_TYPE):
                continue
            key = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
            primitive = code[0].islower()
            if primitive:
                keys["_" + key] = [ELEMENT, ELEMENT, None, None]
                if not strength:
                    continue
            keys[key] = [None if primitive else code, code, strength, value_set]


# ---- CodeSystems ---------------------------------------------------------------------


class CodeSystem:
    """One complete CodeSystem: its codes, each code's parents, and property values."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self.url: str = resource["url"]
        self.codes: list[str] = []
        self.parents: dict[str, list[str]] = {}
        self.properties: dict[str, dict[str, str]] = {}
        self._walk(resource.get("concept", []), None)
        for code, values in self.properties.items():
            for name in ("parent", "subsumedBy"):
                if name in values:
                    self._add_parent(code, values[name])
            if "child" in values:
                self._add_parent(values["child"], code)

    def _walk(self, concepts: list[dict[str, Any]], parent: str | None) -> None:
        for concept in concepts:
            code = concept["code"]
            if code not in self.properties:
                self.codes.append(code)
                self.properties[code] = {}
            for prop in concept.get("property", []):
                value = next((v for k, v in prop.items() if k.startswith("value")), None)
                if value is not None:
                    # As a filter's value spells it: valueBoolean true is "true".
                    text = orjson.dumps(value).decode() if isinstance(value, bool) else str(value)
                    self.properties[code][prop["code"]] = text
            if parent is not None:
                self._add_parent(code, parent)
            self._walk(concept.get("concept", []), code)

    def _add_parent(self, code: str, parent: str) -> None:
        known = self.parents.setdefault(code, [])
        if parent not in known:
            known.append(parent)

    def descendants(self, code: str) -> set[str]:
        children: dict[str, list[str]] = {}
        for child, parents in self.parents.items():
            for parent in parents:
                children.setdefault(parent, []).append(child)
        found: set[str] = set()
        stack = [code]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return found

    def select(self, filters: list[dict[str, Any]]) -> set[str]:
        """The codes that pass every filter (R4 valueset.html#compose: filters AND)."""
        selected = set(self.codes)
        for item in filters:
            selected &= self._filter(item["property"], item["op"], item["value"])
        return selected

    def _filter(self, prop: str, op: str, value: str) -> set[str]:
        if prop == "concept" and op == "is-a":
            return {value} | self.descendants(value)
        if prop == "concept" and op == "descendent-of":
            return self.descendants(value)
        if prop == "concept" and op == "is-not-a":
            return set(self.codes) - {value} - self.descendants(value)
        if prop == "code" and op == "regex":
            pattern = re.compile(value)
            return {code for code in self.codes if pattern.fullmatch(code)}
        if op == "=":
            return {c for c in self.codes if self.properties[c].get(prop) == value}
        raise NotExpandable(f"filter {prop} {op} on {self.url} is not supported")


# ---- ValueSet expansion --------------------------------------------------------------


class Expander:
    def __init__(self, value_sets: list[dict[str, Any]], systems: list[dict[str, Any]]) -> None:
        self.value_sets = {_canonical(vs["url"]): vs for vs in value_sets}
        self.systems: dict[str, CodeSystem] = {}
        self.unusable: dict[str, str] = {}
        for resource in systems:
            url = resource["url"]
            if resource.get("content") == "complete":
                self.systems[url] = CodeSystem(resource)
            else:
                self.unusable[url] = f"its CodeSystem content is {resource.get('content')!r}"
        self._done: dict[str, set[Code] | str] = {}

    def expand_all(self) -> tuple[dict[str, set[Code]], dict[str, str]]:
        expansions: dict[str, set[Code]] = {}
        failures: dict[str, str] = {}
        for url in sorted(self.value_sets):
            result = self._expand(url, ())
            if isinstance(result, str):
                failures[url] = result
            else:
                expansions[url] = result
        return expansions, failures

    def _expand(self, url: str, seen: tuple[str, ...]) -> set[Code] | str:
        if url not in self._done:
            try:
                self._done[url] = self._compose(url, seen)
            except NotExpandable as exc:
                self._done[url] = str(exc)
        return self._done[url]

    def _compose(self, url: str, seen: tuple[str, ...]) -> set[Code]:
        if url in seen:
            raise NotExpandable(f"{url} includes itself")
        value_set = self.value_sets.get(url)
        if value_set is None:
            raise NotExpandable(f"ValueSet {url} is not in the definitions")
        compose = value_set.get("compose")
        if compose is None:
            raise NotExpandable(f"ValueSet {url} has no compose")
        codes: set[Code] = set()
        for part in compose.get("include", []):
            codes |= self._part(part, (*seen, url))
        for part in compose.get("exclude", []):
            codes -= self._part(part, (*seen, url))
        return codes

    def _part(self, part: dict[str, Any], seen: tuple[str, ...]) -> set[Code]:
        """One include/exclude: its system's selection, intersected with its ValueSets."""
        selections: list[set[Code]] = []
        system = part.get("system")
        if system is not None:
            selections.append(self._from_system(system, part))
        for imported in part.get("valueSet", []):
            result = self._expand(_canonical(imported), seen)
            if isinstance(result, str):
                raise NotExpandable(result)
            selections.append(result)
        if not selections:
            raise NotExpandable("an include names neither system nor valueSet")
        return set.intersection(*selections)

    def _from_system(self, system: str, part: dict[str, Any]) -> set[Code]:
        if "concept" in part:
            # Listed codes need no CodeSystem (UCUM units, MIME types...).
            return {(system, concept["code"]) for concept in part["concept"]}
        code_system = self.systems.get(system)
        if code_system is None:
            reason = self.unusable.get(system, "its CodeSystem is not in the definitions")
            raise NotExpandable(f"{system}: {reason}")
        codes = code_system.select(part.get("filter", []))
        return {(system, code) for code in codes}


# ---- output --------------------------------------------------------------------------


def derive(definitions: Path) -> dict[str, Any]:
    structures = [
        *_entries(definitions, "profiles-types"),
        *_entries(definitions, "profiles-resources"),
    ]
    terminology = list(_entries(definitions, "valuesets"))
    value_sets = [r for r in terminology if r["resourceType"] == "ValueSet"]
    systems = [r for r in terminology if r["resourceType"] == "CodeSystem"]
    expander = Expander(value_sets, systems)
    expansions, failures = expander.expand_all()
    return {
        "bindings.json.gz": {"definitions": binding_table(structures)},
        "valuesets.json.gz": {
            "expansions": {url: _by_system(codes) for url, codes in expansions.items()},
            "not_expandable": failures,
        },
        "codesystems.json.gz": {
            "parents": {
                url: system.parents
                for url, system in sorted(expander.systems.items())
                if system.parents
            }
        },
    }


def _by_system(codes: set[Code]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for system, code in sorted(codes):
        grouped.setdefault(system, []).append(code)
    return grouped


def write(tables: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        text = orjson.dumps(table, option=orjson.OPT_SORT_KEYS)
        # mtime=0: the same tables give the same bytes, so the committed files compare.
        (out / name).write_bytes(gzip.compress(text, compresslevel=9, mtime=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--definitions", type=Path, default=DEFAULT_DEFINITIONS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    tables = derive(args.definitions)
    write(tables, args.out)
    valuesets = tables["valuesets.json.gz"]
    print(
        f"derive_terminology: {len(valuesets['expansions'])} ValueSets expanded, "
        f"{len(valuesets['not_expandable'])} not expandable; wrote {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
