"""Derive the R4 invariants table (conformance-rules.html#constraints) from the official
definitions into fhirserver/resources/derived/invariants.json.gz.

Every `constraint` in the snapshots of the resource and data type StructureDefinitions
(profiles-resources, profiles-types) is keyed by the JSON Schema definition that holds
its context element (`Observation`, `Observation_ReferenceRange`, `Period`), plus the
element name when the context is a leaf element of that definition (`ElementDefinition`
`max`). Keying by definition rather than by full path makes a data type's invariants
apply wherever the type is used, at any depth (Extension in Extension, contained
resources), with no path enumeration to cut off.

Left out, because the server checks them natively (fhirserver/resources/invariants.py):
`ele-1` (every element has a value or children) and `ext-1` (an extension has a value or
extensions, not both). An expression calling a function fhirpathpy lacks, or failing when
test-run on an empty node, is marked `supported: false`: the server reports it as a
warning (not checked) instead of evaluating it.

Usage: python scripts/derive_invariants.py [--definitions DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhirserver.resources.invariants import (  # noqa: E402
    compile_expression,
    missing_functions,
    run,
)
from fhirserver.resources.schema import elements  # noqa: E402

DEFINITIONS = ROOT.parent / "shared" / "data" / "r4" / "definitions"
OUT = ROOT / "fhirserver" / "resources" / "derived"
FILE_NAME = "invariants.json.gz"
BUNDLES = ("profiles-resources", "profiles-types")
NATIVE = frozenset({"ele-1", "ext-1"})


def structure_definitions(folder: Path) -> list[dict[str, Any]]:
    found = []
    for name in BUNDLES:
        bundle = orjson.loads(gzip.decompress((folder / f"{name}.json.gz").read_bytes()))
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "StructureDefinition" and "snapshot" in resource:
                found.append(resource)
    return found


def definition_paths(root: str) -> dict[str, str]:
    """FHIR element path -> JSON Schema definition, for a type and its backbone elements
    (`Observation.referenceRange` -> `Observation_ReferenceRange`)."""
    found = {root: root}
    pending = [(root, root)]
    while pending:
        path, definition = pending.pop()
        for name, element in elements(definition).items():
            target = element.definition
            # Backbone definitions are named Owner_Part; a data type or a contentReference
            # back to an already mapped backbone is not walked again.
            if target and "_" in target and target not in found.values():
                found[f"{path}.{name}"] = target
                pending.append((f"{path}.{name}", target))
    return found


def unsupported_reason(expression: str, base: str) -> str | None:
    """Why fhirpathpy cannot check it, found the way the server will run it."""
    missing = missing_functions(expression)
    if missing:
        return "fhirpathpy lacks " + ", ".join(f"{name}()" for name in missing)
    try:
        run(compile_expression(expression), {}, base, {}, {})
    except Exception as exc:  # fhirpathpy raises bare Exceptions for what it cannot run
        return f"fhirpathpy fails on it: {str(exc)[:80]}"
    return None


def derive(folder: Path) -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = {}
    for sd in structure_definitions(folder):
        if sd["kind"] not in ("resource", "complex-type") or sd.get("abstract"):
            continue
        paths = definition_paths(sd["type"])
        for element in sd["snapshot"]["element"]:
            path = element["path"]
            for constraint in element.get("constraint", []):
                if constraint["key"] in NATIVE:
                    continue
                if path in paths:
                    definition, name = paths[path], None
                else:
                    parent, _, name = path.rpartition(".")
                    definition = paths[parent]
                    name = name.removesuffix("[x]")
                reason = unsupported_reason(constraint["expression"], path)
                table.setdefault(definition, []).append(
                    {
                        "key": constraint["key"],
                        "severity": constraint["severity"],
                        "human": constraint["human"],
                        "expression": constraint["expression"],
                        "path": path,
                        "element": name,
                        "choice": name is not None and path.endswith("[x]"),
                        "unsupported": reason,
                    }
                )
    return {name: table[name] for name in sorted(table)}


def write(table: dict[str, Any], out: Path, file_name: str = FILE_NAME) -> Path:
    """The table as sorted, gzipped JSON: the same definitions give the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / file_name
    data = orjson.dumps(table, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    # mtime=0: the same definitions give the same bytes, so the up-to-date test can compare.
    target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=DEFINITIONS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = derive(args.definitions)
    target = write(table, args.out)
    count = sum(len(v) for v in table.values())
    unsupported = sum(1 for v in table.values() for c in v if c["unsupported"])
    print(f"{target}: {count} invariants on {len(table)} definitions, {unsupported} unsupported")


if __name__ == "__main__":
    main()
