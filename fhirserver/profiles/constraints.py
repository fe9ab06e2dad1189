"""A profile's own invariants (R4 conformance-rules.html#constraints), run with fhirpathpy.

The core invariants of every resource and data type run in the core validation; a
profile adds its own (us-core-8, vs-1, ...), compiled once per expression. When the
core invariants module is present, it evaluates the same way; until then this is the
one place a profile's FHIRPath runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhirserver.resources.codec import JSONObject

Evaluator = Callable[..., list[Any]]


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str

    @classmethod
    def of(cls, definition: JSONObject) -> Constraint:
        return cls(
            str(definition.get("key", "")),
            str(definition.get("severity", "error")),
            str(definition.get("human", "")),
            str(definition.get("expression", "")),
        )


class NotEvaluable(Exception):
    """fhirpathpy cannot run this expression (an unsupported function, say)."""


# Compiled expressions kept, the most recently used: stored StructureDefinitions (any
# writer's) bring their own, so an unbounded cache would grow with what clients store.
# US Core 3.1.0's profiles carry 39 distinct expressions.
COMPILED_AT_MOST = 2048


@lru_cache(maxsize=COMPILED_AT_MOST)
def compiled(expression: str) -> Evaluator:
    try:
        evaluator: Evaluator = fhirpathpy.compile(expression, models["r4"])
    except Exception as exc:  # fhirpathpy raises plain Exceptions from its parser
        raise NotEvaluable(_reason(exc)) from None
    return evaluator


def holds(constraint: Constraint, item: Any, resource: JSONObject, path: str) -> bool:
    """Whether the invariant holds on one element (its context), within `resource`.

    A primitive alone carries no type for fhirpathpy (`$this as dateTime` would be
    empty), so an invariant on primitives runs from the resource over every value at
    the element's `path`, where the model gives their types."""
    if isinstance(item, dict) or not path:
        evaluate, target = compiled(constraint.expression), item
    else:
        evaluate, target = compiled(f"{path}.all({constraint.expression})"), resource
    try:
        result = evaluate(target, {"resource": resource, "rootResource": resource})
    # Any failure of the engine (a function it lacks, a type it cannot handle) means
    # "cannot say", never a 500.
    except Exception as exc:
        raise NotEvaluable(_reason(exc)) from None
    # FHIRPath: an empty result, or a single false, fails the invariant.
    return bool(result) and result != [False]


def _reason(exc: Exception) -> str:
    """The engine's complaint without the data it quotes ("Expected boolean, got: {...}"):
    an OperationOutcome must not echo a resource's values back at length."""
    text = str(exc).split(", got:", 1)[0].split("\n", 1)[0]
    return (text if len(text) <= 120 else text[:119] + "…") or type(exc).__name__
