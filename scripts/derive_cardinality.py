"""Derive the R4 required elements and choice groups (R4 elementdefinition.html `min`,
formats.html#choice) from the official definitions into
fhirserver/resources/derived/cardinality.json.gz.

The official JSON Schema lists, per definition, only the complex elements that must be
present: a required primitive (Observation.status) is left out there because its value
may be absent when its `_status` twin carries an extension (json.html#primitive). And the
schema does not say which keys are one choice element (`value[x]`: valueString,
valueQuantity, ...), of which at most one may be present. Both come from the snapshots of
the resource and data type StructureDefinitions, keyed like the invariants table by the
JSON Schema definition holding the element (`Observation`, `Observation_Component`):

    {definition: {"required": [name, ...], "choices": {name: [key, ...]}}}

A required choice element is listed by its name without `[x]` (`value`) and is present
when any of its keys is.

Usage: python scripts/derive_cardinality.py [--definitions DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from derive_invariants import DEFINITIONS, OUT, structure_definitions, write

from fhirserver.resources.schema import elements

FILE_NAME = "cardinality.json.gz"


def definition_paths(root: str) -> dict[str, str]:
    """Every FHIR element path of a type's backbone elements -> its JSON Schema
    definition. A backbone reached by more than one path (ClaimResponse.item.adjudication
    and ClaimResponse.addItem.adjudication; TestScript.setup.action.assert and, through a
    contentReference, TestScript.test.action.assert) is mapped at each, so the snapshot
    element that defines it is found whichever path it is written under; a definition is
    not walked again below itself (Questionnaire.item.item)."""
    found = {root: root}
    pending: list[tuple[str, str, tuple[str, ...]]] = [(root, root, (root,))]
    while pending:
        path, definition, above = pending.pop()
        for name, element in elements(definition).items():
            target = element.definition
            if target and "_" in target and target not in above:
                found[f"{path}.{name}"] = target
                pending.append((f"{path}.{name}", target, (*above, target)))
    return found


def derive(folder: Path) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for sd in structure_definitions(folder):
        if sd["kind"] not in ("resource", "complex-type") or sd.get("abstract"):
            continue
        paths = definition_paths(sd["type"])
        for element in sd["snapshot"]["element"]:
            parent, _, name = element["path"].rpartition(".")
            if parent not in paths:
                continue  # the root, or below a contentReference (keyed at its origin)
            definition = paths[parent]
            entry = table.setdefault(definition, {"required": [], "choices": {}})
            choice = name.endswith("[x]")
            name = name.removesuffix("[x]")
            if choice:
                keys = [
                    name + kind["code"][0].upper() + kind["code"][1:] for kind in element["type"]
                ]
                entry["choices"][name] = sorted(keys)
            if element.get("min", 0) >= 1 and name not in entry["required"]:
                entry["required"].append(name)
    for entry in table.values():
        entry["required"].sort()
    return {name: table[name] for name in sorted(table)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--definitions", type=Path, default=DEFINITIONS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    table = derive(args.definitions)
    target = write(table, args.out, FILE_NAME)
    required = sum(len(v["required"]) for v in table.values())
    choices = sum(len(v["choices"]) for v in table.values())
    print(f"{target}: {required} required elements, {choices} choice elements")


if __name__ == "__main__":
    main()
