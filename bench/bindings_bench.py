"""The cost per resource of the required-binding check, next to a floor (BENCH_ONLY=bindings).

Over the Synthea resources (bench.load_data: every entry of every Bundle), in this process,
after one untimed pass that compiles and caches what each layer needs:
- floor: a bare walk that visits every value of the resource once, the least any check of
  the whole resource could cost in Python;
- bindings: `check_bindings` (fhirserver.resources.bindings), which walks only the keys on a
  path to a required, expandable binding;
- structure: `check_structure`, the layer that runs before it on every write, for scale;
- validate: the whole `validate` a write runs (structure, model or schema, bindings).
Each figure is the best of a few rounds: the other processes on a shared machine only
ever add time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.load_data import bundle_files, bundles
from bench.synthea import DATA_DIR
from fhirserver.resources.bindings import check_bindings
from fhirserver.resources.structure import check_structure
from fhirserver.resources.validate import validate

ROUNDS = 3
Resource = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    seconds: float
    resources: int

    @property
    def micros(self) -> float:
        return self.seconds / self.resources * 1e6


def bare_walk(value: Any) -> int:
    """Visit every value once; the count keeps the work from being optimised away."""
    if isinstance(value, dict):
        return 1 + sum(bare_walk(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(bare_walk(item) for item in value)
    return 1


def _floor(resource: Resource) -> object:
    return bare_walk(resource)


def _bindings(resource: Resource) -> object:
    return check_bindings(resource["resourceType"], resource)


def _structure(resource: Resource) -> object:
    return check_structure(resource["resourceType"], resource)


def _validate(resource: Resource) -> object:
    return validate(resource)


LAYERS: tuple[tuple[str, Callable[[Resource], object]], ...] = (
    ("floor (bare walk)", _floor),
    ("bindings", _bindings),
    ("structure", _structure),
    ("validate (all)", _validate),
)


def resources() -> list[Resource]:
    return [
        entry["resource"] for _, entries in bundles(bundle_files(DATA_DIR)) for entry in entries
    ]


def measure(sample: list[Resource], layer: Callable[[Resource], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for resource in sample:
            layer(resource)
        best = min(best, time.perf_counter() - start)
    return best


def run(rounds: int = ROUNDS) -> list[Figure]:
    sample = resources()
    flagged = sum(1 for resource in sample if check_bindings(resource["resourceType"], resource))
    for _, layer in LAYERS:  # untimed: compile and cache per type
        for resource in sample[:2000]:
            layer(resource)
    figures = [Figure(name, measure(sample, layer, rounds), len(sample)) for name, layer in LAYERS]
    print(
        f"bindings: {len(sample)} Synthea resources, {flagged} with a binding error; "
        f"best of {rounds} rounds, one process"
    )
    floor = figures[0].micros
    for figure in figures:
        print(
            f"  {figure.name:<18} {figure.micros:8.1f} µs/resource "
            f"({figure.micros / floor:5.2f}x the floor)"
        )
    return figures


if __name__ == "__main__":
    run()
