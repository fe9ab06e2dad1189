"""The shortcuts and native forms of the R4 invariants (conformance-rules.html
#constraints) give fhirpathpy's answers: on the official examples, the Synthea sample and
mutated examples, every issue found with them is the issue fhirpathpy alone finds."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirserver.resources import codec, invariants
from fhirserver.resources.invariant_shortcuts import reads, shortcut
from fhirserver.resources.invariants import Invariant, check_invariants, compile_expression
from tests.resources.test_invariants import CASES, mutate

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# fhirpathpy cannot compare two Quantities (rng-2): only the native form checks it.
NATIVE_ONLY = frozenset({"rng-2"})
# Where fhirpathpy is wrong and the native form right, each with a case in CASES.
FHIRPATHPY_WRONG = {
    "per-1": "fhirpathpy orders dateTimes in different zones without normalising them: "
    "to it 10:00+02:00 <= 09:00Z is false",
}


def fhirpath_only(definition: str) -> tuple[Invariant, ...]:
    return tuple(
        invariant
        if invariant.key in NATIVE_ONLY or invariant.unsupported
        else dataclasses.replace(
            invariant,
            shortcut=None,
            check=None,
            evaluate=invariant.evaluate or compile_expression(invariant.expression),
        )
        for invariant in FAST(definition)
    )


FAST = invariants.invariants_of


def samples() -> Iterator[dict[str, Any]]:
    rng = random.Random(2)
    examples = sorted((DATA / "r4" / "examples").glob("*.json"))
    for path in examples[::3]:
        yield codec.loads(path.read_bytes())
    for path in sorted((DATA / "synthea-2019").glob("*.json"))[:2]:
        for entry in codec.loads(path.read_bytes())["entry"]:
            yield entry["resource"]
    for case in CASES:
        yield case[3]
        yield case[4]
    for _ in range(60):
        yield mutate(codec.loads(rng.choice(examples).read_bytes()), rng)


def test_shortcuts_agree_with_fhirpathpy(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = [r for r in samples() if isinstance(r.get("resourceType"), str)]
    fast = [check_invariants(r["resourceType"], r) for r in resources]
    monkeypatch.setattr(invariants, "invariants_of", fhirpath_only)
    slow = [check_invariants(r["resourceType"], r) for r in resources]
    differences = [
        (resource.get("id"), set(a) ^ set(b))
        for resource, a, b in zip(resources, fast, slow, strict=True)
        if {i.diagnostics.split(" ")[1] for i in set(a) ^ set(b)} - FHIRPATHPY_WRONG.keys()
    ]
    assert differences == []


def test_what_a_part_reads() -> None:
    assert reads("Observation", "dataAbsentReason.empty() or value.empty()") >= {
        "dataAbsentReason",
        "valueQuantity",
        "_valueString",
    }
    assert reads("Period", "start.hasValue().not() or (start <= end)") == {
        "start",
        "_start",
        "end",
        "_end",
    }
    # On a resource, %resource is the node: what it reads there is read too.
    assert "status" in (reads("Observation", "%resource.status.exists()") or ())
    # Reading the context itself or another node: any key may matter.
    assert reads("Element", "hasValue() or children().exists()") is None
    assert reads("Reference", "reference in %rootResource.contained.id") is None


def test_implies_and_xor_are_not_split() -> None:
    found = shortcut("Appointment", "start.exists() implies end.exists()", lambda _: [])
    assert found is not None and len(found.parts) == 1
    assert found.decide({"start": "x"}) is None or found.decide({"start": "x"}) is False
