"""What the search prefixes mean for dates, numbers and quantities (R4
search.html#prefix), written once: the in-memory matcher (`match.py`) evaluates these
conditions in Python, and each store's compiler renders them in its own query language,
so the three cannot drift apart.

Each prefix is a set of comparisons of the stored range against the searched range, all
of which must hold (for `ne`, not all). A stored date is the instant range [low, high)
its precision implies, a stored number the closed range [low, high] it stands for. The
searched range is the one the search value's precision implies, except that a number's
ordering prefixes (gt, lt, ge, le, sa, eb) compare with the value itself, and `ap`
widens it: a date by 10% of its distance from now, a number by 10% of the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from fhirserver.search.time import approximate_range

End = Literal["low", "high"]
Operator = Literal["<", "<=", ">", ">="]
N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Comparison:
    """`stored.<stored> <operator> searched.<searched>`."""

    stored: End
    operator: Operator
    searched: End


@dataclass(frozen=True, slots=True)
class Prefix:
    comparisons: tuple[Comparison, ...]
    # `ne`: the comparisons do not all hold.
    negated: bool = False


def _all(*comparisons: tuple[End, Operator, End]) -> tuple[Comparison, ...]:
    return tuple(Comparison(*comparison) for comparison in comparisons)


# eq: the stored range lies within the searched one; gt / lt: some of it lies after /
# before; sa / eb: all of it does; ap: it overlaps the widened range.
_DATE_EQ = _all(("low", ">=", "low"), ("high", "<=", "high"))
DATE_PREFIXES: Mapping[str, Prefix] = {
    "eq": Prefix(_DATE_EQ),
    "ne": Prefix(_DATE_EQ, negated=True),
    "gt": Prefix(_all(("high", ">", "high"))),
    "ge": Prefix(_all(("high", ">", "low"))),
    "lt": Prefix(_all(("low", "<", "low"))),
    "le": Prefix(_all(("low", "<", "high"))),
    "sa": Prefix(_all(("low", ">=", "high"))),
    "eb": Prefix(_all(("high", "<=", "low"))),
    "ap": Prefix(_all(("low", "<", "high"), ("high", ">", "low"))),
}

# The same shape over closed stored ranges; for the ordering prefixes the searched range
# is the value alone, so `low` and `high` on the searched side are both the value.
_NUMBER_EQ = _all(("low", ">=", "low"), ("high", "<", "high"))
NUMBER_PREFIXES: Mapping[str, Prefix] = {
    "eq": Prefix(_NUMBER_EQ),
    "ne": Prefix(_NUMBER_EQ, negated=True),
    "gt": Prefix(_all(("high", ">", "high"))),
    "ge": Prefix(_all(("high", ">=", "low"))),
    "lt": Prefix(_all(("low", "<", "low"))),
    "le": Prefix(_all(("low", "<=", "high"))),
    "sa": Prefix(_all(("low", ">", "high"))),
    "eb": Prefix(_all(("high", "<", "low"))),
    "ap": Prefix(_all(("low", "<=", "high"), ("high", ">=", "low"))),
}


@dataclass(frozen=True, slots=True)
class Condition(Generic[N]):
    """A prefix with its searched bounds filled in: each term is (the end of the stored
    range, operator, bound); all hold, or for a `negated` condition not all."""

    terms: tuple[tuple[End, Operator, N], ...]
    negated: bool


def _condition(prefix: Prefix, low: N, high: N) -> Condition[N]:
    searched = {"low": low, "high": high}
    return Condition(
        tuple((c.stored, c.operator, searched[c.searched]) for c in prefix.comparisons),
        prefix.negated,
    )


def date_condition(prefix: str, low: int, high: int) -> Condition[int]:
    """A date prefix against the searched range [low, high), in microseconds."""
    if prefix == "ap":
        low, high = approximate_range(low, high)
    return _condition(DATE_PREFIXES[prefix], low, high)


def number_condition(prefix: str, value: float, low: float, high: float) -> Condition[float]:
    """A number prefix against the value and the range [low, high) its precision
    implies ("100" is [99.5, 100.5))."""
    if prefix == "ap":
        margin = abs(value) * 0.1
        low, high = value - margin, value + margin
    elif prefix not in ("eq", "ne"):
        low = high = value
    return _condition(NUMBER_PREFIXES[prefix], low, high)
