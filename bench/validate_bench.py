"""Validation cost per resource, by layer, on the Synthea data (issue 13 point 2).

The resources of the first BENCH_VALIDATE_FILES Synthea Bundles (bench.synthea.DATA_DIR),
grouped as Observation, Encounter, Patient and all types. Each group is timed, after one
untimed pass that compiles and caches what validation caches per type:
- floor: an orjson round trip of each resource (what touching it at all costs);
- invariants: `check_invariants` alone (FHIRPath invariants and the native ones);
- validate: the whole of `validate` (structure, R4B model or schema, then invariants).
Per-resource microseconds, and the share of validate the invariants take.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from bench.load_data import bundle_files, bundles
from bench.params import Params
from bench.synthea import DATA_DIR
from fhirserver.resources.invariants import check_invariants
from fhirserver.resources.validate import validate

GROUPS = ("Observation", "Encounter", "Patient", None)
Resource = dict[str, Any]


def resources(files: int) -> list[Resource]:
    found: list[Resource] = []
    for _, entries in bundles(bundle_files(DATA_DIR)[:files]):
        found.extend(entry["resource"] for entry in entries)
    return found


def per_resource_us(step: Callable[[Resource], object], group: list[Resource]) -> float:
    started = time.perf_counter()
    for resource in group:
        step(resource)
    return (time.perf_counter() - started) / len(group) * 1e6


def _floor(resource: Resource) -> object:
    return orjson.loads(orjson.dumps(resource))


def _invariants(resource: Resource) -> object:
    return check_invariants(resource["resourceType"], resource)


def lines(data: list[Resource]) -> Iterable[str]:
    for resource in data:  # untimed: compile and cache per type
        validate(resource)
    yield f"{'group':<12} {'count':>6} {'floor µs':>9} {'invariants µs':>14} {'validate µs':>12}"
    for kind in GROUPS:
        group = [r for r in data if kind is None or r["resourceType"] == kind]
        if not group:
            continue
        floor = per_resource_us(_floor, group)
        invariants = per_resource_us(_invariants, group)
        full = per_resource_us(validate, group)
        yield (
            f"{kind or 'all':<12} {len(group):>6} {floor:>9.1f} {invariants:>14.1f} "
            f"{full:>12.1f}   invariants {invariants / full:.0%} of validate, "
            f"{invariants / floor:.0f}x the floor; validate alone "
            f"{1e6 / full:,.0f} resources/s/core"
        )


def run(params: Params) -> None:
    data = resources(params.validate_files)
    print(f"validation: {len(data)} resources of {params.validate_files} Synthea Bundles")
    for line in lines(data):
        print(line, flush=True)


if __name__ == "__main__":
    run(Params.from_env())
