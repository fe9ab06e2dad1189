"""bench/validate_bench.py: `BENCH_ONLY=validate` prints the validation cost per resource
of each layer, per group, next to its floor."""

from __future__ import annotations

from bench.validate_bench import lines

OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"text": "weight"},
    "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org"},
}


def test_a_line_per_group_present_with_its_figures() -> None:
    printed = list(lines([OBSERVATION, {"resourceType": "Patient", "active": True}]))
    assert printed[0].split()[:2] == ["group", "count"]
    groups = [line.split()[0] for line in printed[1:]]
    assert groups == ["Observation", "Patient", "all"]
    assert all("of validate" in line and "resources/s/core" in line for line in printed[1:])
