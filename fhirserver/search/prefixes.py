"""What the search prefixes mean for dates, numbers and quantities (R4
search.html#prefix), written once: the in-memory matcher (`match.py`) evaluates these
conditions in Python, and each store's compiler renders them in its own query language,
so the three cannot drift apart.

Each prefix is a set of comparisons of the stored range against the searched range, all
of which must hold (for `ne`, not all). A stored date is the instant range [low, high)
its precision implies, a stored number the closed range [low, high] it stands for. The
searched range is the one the search value's precision implies, except that a number's
ordering prefixes gt, lt, ge, le compare with the value itself (as HAPI does), and `ap`
widens it: a date by 10% of its distance from now, a number by 10% of the value. `sa`
and `eb` keep the range ("the range of the search value does not overlap with the range
of the target value", search.html#prefix): a stored 81.224 does not start after 81,
which stands for [80.5, 81.5).
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
    """`stored.<stored> <operator> searched.<searched>`, with the operator for a date
    and the one for a number. They differ where the ends do: a stored date's high end
    is excluded and a stored number's included, and a number's ordering prefixes
    compare with the value, a single point."""

    stored: End
    date: Operator
    number: Operator
    searched: End


@dataclass(frozen=True, slots=True)
class Prefix:
    comparisons: tuple[Comparison, ...]
    # `ne`: the comparisons do not all hold.
    negated: bool = False


def _all(*comparisons: tuple[End, Operator, Operator, End]) -> tuple[Comparison, ...]:
    return tuple(Comparison(*comparison) for comparison in comparisons)


# Each comparison: (stored end, date operator, number operator, searched end).
_EQ = _all(("low", ">=", ">=", "low"), ("high", "<=", "<", "high"))
PREFIXES: Mapping[str, Prefix] = {
    # The stored range lies within the searched one.
    "eq": Prefix(_EQ),
    "ne": Prefix(_EQ, negated=True),
    # Some of the stored range lies after (gt, ge) or before (lt, le) the searched one.
    "gt": Prefix(_all(("high", ">", ">", "high"))),
    "ge": Prefix(_all(("high", ">", ">=", "low"))),
    "lt": Prefix(_all(("low", "<", "<", "low"))),
    "le": Prefix(_all(("low", "<", "<=", "high"))),
    # All of the stored range lies after (sa) or before (eb) the searched one.
    "sa": Prefix(_all(("low", ">=", ">=", "high"))),
    "eb": Prefix(_all(("high", "<=", "<", "low"))),
    # The stored range meets the widened searched one.
    "ap": Prefix(_all(("low", "<", "<=", "high"), ("high", ">", ">=", "low"))),
}


@dataclass(frozen=True, slots=True)
class Condition(Generic[N]):
    """A prefix with its searched bounds filled in: each term is (the end of the stored
    range, operator, bound); all hold, or for a `negated` condition not all."""

    terms: tuple[tuple[End, Operator, N], ...]
    negated: bool


def date_condition(prefix: str, low: int, high: int) -> Condition[int]:
    """A date prefix against the searched range [low, high), in microseconds."""
    if prefix == "ap":
        low, high = approximate_range(low, high)
    return _condition(prefix, False, low, high)


def number_condition(prefix: str, value: float, low: float, high: float) -> Condition[float]:
    """A number prefix against the value and the range [low, high) its precision
    implies ("100" is [99.5, 100.5))."""
    if prefix == "ap":
        margin = abs(value) * 0.1
        low, high = value - margin, value + margin
    elif prefix not in ("eq", "ne", "sa", "eb"):
        low = high = value
    return _condition(prefix, True, low, high)


def _condition(prefix: str, number: bool, low: N, high: N) -> Condition[N]:
    entry = PREFIXES[prefix]
    searched = {"low": low, "high": high}
    terms = tuple(
        (c.stored, c.number if number else c.date, searched[c.searched]) for c in entry.comparisons
    )
    return Condition(terms, entry.negated)
