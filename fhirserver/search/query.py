"""The one search representation every executor consumes (R4 search.html).

Index entries are what a resource offers to search, extracted at write time; a
`SearchQuery` is what a client asks, parsed once from the query string. The SQLite
compiler, the MongoDB compiler and the in-memory matcher (`match.py`) all take these
same types; nothing downstream re-reads a query string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# --- Index entries: values a resource offers, per search parameter -------------------
# Composite parameters store one entry per component, under "code#0", "code#1", ...,
# with a `group` number that ties the components of one element together.


class _Entry:
    """Pickles as its class and field values: `fhirserver import` sends millions of
    entries from worker processes, and the default for a frozen, slotted dataclass
    (a state dict set field by field) is about six times slower to load."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        fields: tuple[str, ...] = self.__slots__
        return type(self), tuple(getattr(self, name) for name in fields)


@dataclass(frozen=True, slots=True)
class StringEntry(_Entry):
    param: str
    # Case-folded, accents removed, whitespace collapsed: what default search compares.
    normalized: str
    exact: str
    group: int | None = None


@dataclass(frozen=True, slots=True)
class TokenEntry(_Entry):
    param: str
    system: str | None
    code: str | None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class DateEntry(_Entry):
    """[low, high) in microseconds since the epoch, UTC; open ends are MIN / MAX_MICROS."""

    param: str
    low: int
    high: int
    group: int | None = None


@dataclass(frozen=True, slots=True)
class NumberEntry(_Entry):
    """A number or quantity as the closed range [low, high] of values it stands for
    (a point has low == high; a Range its bounds). Quantities also carry their units."""

    param: str
    low: float
    high: float
    system: str | None = None
    code: str | None = None
    unit: str | None = None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class ReferenceEntry(_Entry):
    """A local reference has a target type and id; any other (absolute, canonical) a url."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None
    group: int | None = None


@dataclass(frozen=True, slots=True)
class UriEntry(_Entry):
    param: str
    value: str
    group: int | None = None


IndexEntry = StringEntry | TokenEntry | DateEntry | NumberEntry | ReferenceEntry | UriEntry

# The parameter type of the entries of each class (quantities are NumberEntry too).
ENTRY_KIND: dict[type, str] = {
    StringEntry: "string",
    TokenEntry: "token",
    DateEntry: "date",
    NumberEntry: "number",
    ReferenceEntry: "reference",
    UriEntry: "uri",
}

MIN_MICROS = -(2**62)
MAX_MICROS = 2**62

# --- Predicates: one value of one parameter in a query -------------------------------


@dataclass(frozen=True, slots=True)
class StringPredicate:
    """mode: "start" (default, on the normalized form), "exact", or "contains"."""

    param: str
    value: str
    mode: str = "start"


@dataclass(frozen=True, slots=True)
class TokenPredicate:
    """`[system]|[code]`: system None matches any system, "" only none; code None any code.
    `negate` is the :not modifier: no entry of the parameter matches."""

    param: str
    system: str | None
    code: str | None
    negate: bool = False


@dataclass(frozen=True, slots=True)
class DatePredicate:
    """A prefixed date search against [low, high), the range the value's precision implies."""

    param: str
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class NumberPredicate:
    """A number, or a quantity when system / code are given ("" code matches any unit).

    [low, high) is the range the value's precision implies; `value` the number itself.
    """

    param: str
    prefix: str
    value: float
    low: float
    high: float
    quantity: bool = False
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferencePredicate:
    """A reference to `target_type`/`target_id` (either may be None: any), or to `url`.

    A stored reference equal to one of `absolute` also matches: the same local target
    written as an absolute URL on this server (search.html#reference).
    """

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None = None
    absolute: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UriPredicate:
    """mode: "exact", "below" (the value is a prefix of the stored uri), "above" (the
    stored uri is a prefix of the value)."""

    param: str
    value: str
    mode: str = "exact"


@dataclass(frozen=True, slots=True)
class MissingPredicate:
    """`:missing=true` (no entry at all) or `:missing=false` (at least one); `kind` is
    the parameter's type, which says where its entries are."""

    param: str
    missing: bool
    kind: str


@dataclass(frozen=True, slots=True)
class ChainPredicate:
    """`param(:Type).inner`: some target of the reference parameter matches `inner`."""

    param: str
    target_types: tuple[str, ...]
    inner: Predicate


@dataclass(frozen=True, slots=True)
class HasPredicate:
    """`_has:Type:param:inner`: some `source_type` resource whose reference parameter
    `param` points here matches `inner`."""

    source_type: str
    param: str
    inner: Predicate


@dataclass(frozen=True, slots=True)
class CompositePredicate:
    """`a$b`: one element of the resource matches every component predicate, each on
    the parameter "code#n"."""

    param: str
    components: tuple[Predicate, ...]


@dataclass(frozen=True, slots=True)
class IdPredicate:
    """`_id`."""

    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LastUpdatedPredicate:
    prefix: str
    low: datetime
    high: datetime


@dataclass(frozen=True, slots=True)
class AllOfPredicate:
    """An AND of OR-lists nested as one predicate, so an OR-list can hold several
    conjunctions (SMART: a token's alternatives). `resource_type`, if set, limits it to
    resources of that type (a system search gives each type its own conditions; a
    chain's target types likewise). No clauses: every resource (of that type)."""

    clauses: tuple[tuple[Predicate, ...], ...]
    resource_type: str | None = None


# The predicates one index entry can meet on its own.
RowPredicate = (
    StringPredicate
    | TokenPredicate
    | DatePredicate
    | NumberPredicate
    | ReferencePredicate
    | UriPredicate
)

Predicate = (
    RowPredicate
    | MissingPredicate
    | ChainPredicate
    | HasPredicate
    | CompositePredicate
    | IdPredicate
    | LastUpdatedPredicate
    | AllOfPredicate
)

# --- The query -----------------------------------------------------------------------

ID = "_id"
LAST_UPDATED = "_lastUpdated"


@dataclass(frozen=True, slots=True)
class SortKey:
    """`param` is a search parameter code of type `kind`, or `_id` / `_lastUpdated`."""

    param: str
    descending: bool = False
    kind: str = "special"


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Source:param(:Target)` or, when `reverse`, `_revinclude`; param "*" is
    every reference parameter of the source type."""

    source_type: str
    param: str
    target_type: str | None = None
    reverse: bool = False
    iterate: bool = False


# The default bound on included resources per page: enough for real graphs, and bounded.
MAX_INCLUDED = 1000


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """An AND of OR-lists of predicates over `resource_types` (one, or several for a
    system search), plus what shapes the result."""

    resource_types: tuple[str, ...]
    clauses: tuple[tuple[Predicate, ...], ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    includes: tuple[Include, ...] = ()
    total: str = "none"
    summary: str | None = None
    elements: tuple[str, ...] = ()
    # Opaque keyset cursor of the page asked for, if not the first.
    cursor: str | None = None
    # (parameter, why) for each one ignored under lenient handling, to report back.
    ignored: tuple[tuple[str, str], ...] = field(default=())
    # The most resources `_include` / `_revinclude` bring in per page (Settings).
    max_included: int = MAX_INCLUDED

    @property
    def resource_type(self) -> str:
        return self.resource_types[0]
