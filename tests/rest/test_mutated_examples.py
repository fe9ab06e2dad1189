"""Mutated official examples over HTTP (R4 http.html#create and validation.html: a
server refuses what the definitions reject, with an OperationOutcome; operations.html:
never a 500). Each official example is mutated a few ways (a value of the wrong type, a
code outside its ValueSet, an element emptied or removed, a reference broken, an
invariant's condition upset) with a fixed seed; every answer is below 500, a refused
create stores nothing, and what is stored validates (structure, required bindings,
invariants), read back as stored."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.errors import FHIRError
from fhirserver.resources.validate import validate

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "r4" / "examples"
SEED = 20261204
EXAMPLES_TRIED = 40
MUTATIONS_EACH = 4
ODD_VALUES: list[Any] = ["dragon", "", 12, -1.5, True, None, [], {}, {"x": 1}, ["a"], "2024-13-45"]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in the JSON below the root, except resourceType and id."""
    if isinstance(value, dict):
        for key, child in value.items():
            if path == () and key in ("resourceType", "id"):
                continue
            yield (*path, key)
            yield from _paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*path, index)
            yield from _paths(child, (*path, index))


def _mutate(resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    mutated = copy.deepcopy(resource)
    places = list(_paths(mutated))
    if not places:
        return mutated
    place = rng.choice(places)
    parent: Any = mutated
    for step in place[:-1]:
        parent = parent[step]
    last = place[-1]
    action = rng.choice(("replace", "remove", "code"))
    if action == "remove":
        del parent[last]
    elif action == "code" and isinstance(parent[last], str):
        parent[last] = "dragon"
    else:
        parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
    return mutated


def _cases() -> list[tuple[str, int]]:
    files = sorted(path.name for path in EXAMPLES.glob("*.json"))
    chosen = random.Random(SEED).sample(files, EXAMPLES_TRIED)
    return [(name, n) for name in chosen for n in range(MUTATIONS_EACH)]


@pytest.mark.parametrize(("name", "number"), _cases())
async def test_a_mutated_example_is_refused_cleanly_or_stored_valid(
    client: httpx.AsyncClient, name: str, number: int
) -> None:
    example = json.loads((EXAMPLES / name).read_text())
    rng = random.Random(f"{SEED}-{name}-{number}")
    mutated = _mutate(example, rng)
    resource_type = example["resourceType"]
    before = (await client.get(f"/{resource_type}", params={"_summary": "count"})).json()
    answer = await client.post(f"/{resource_type}", json=mutated)
    assert answer.status_code < 500, answer.text
    after = (await client.get(f"/{resource_type}", params={"_summary": "count"})).json()
    if answer.status_code != 201:
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert after["total"] == before["total"]
        return
    stored = (await client.get(f"/{resource_type}/{answer.json()['id']}")).json()
    try:
        validate(stored, resource_type)
    except FHIRError as exc:
        pytest.fail(f"stored a resource the definitions reject: {exc}")
