"""The one search representation every executor consumes.

A `SearchQuery` is an AND of OR-lists of predicates over one resource type. The
storage backends compile it; nothing downstream re-reads the query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """An index value of a token parameter, extracted at write time."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class TokenPredicate:
    """`[param]=[system]|[code]`: system None matches any system, "" only no system;
    code None matches any code in the system."""

    param: str
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class DatePredicate:
    """A prefixed date search against [low, high), the range the value's precision implies."""

    param: str
    prefix: str
    low: datetime
    high: datetime


Predicate = TokenPredicate | DatePredicate

# Parameters every resource has and that are answered from stored columns, not the index.
ID = "_id"
LAST_UPDATED = "_lastUpdated"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    resource_type: str
    clauses: tuple[tuple[Predicate, ...], ...]
