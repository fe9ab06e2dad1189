"""bench/bindings_bench.py (issue 13 point 2: the cost per resource of each validation
layer, R4 terminologies.html#binding): its floor visits every value once, and each layer
it times runs on the resources it is given."""

from __future__ import annotations

from bench.bindings_bench import LAYERS, bare_walk, measure


def test_the_floor_visits_every_value_once() -> None:
    resource = {"resourceType": "Patient", "name": [{"given": ["A", "B"]}], "gender": "x"}
    # the resource, resourceType, name, its HumanName, given, A, B, gender
    assert bare_walk(resource) == 8


def test_every_layer_runs_on_a_resource() -> None:
    sample = [{"resourceType": "Patient", "gender": "female"}]
    for _, layer in LAYERS:
        assert measure(sample, layer, rounds=2) > 0
