"""Which searches the stores may answer with resources that do not match, because
index values are cut (search/extract.py `INDEX_CUT`): a search value of the cut's length
or more compares only its first INDEX_CUT characters, and `:contains` also takes every
value that was cut (its text may go on past the cut). Their matches are confirmed on the
stored resource with the in-memory matcher, whose entries are whole
(interactions/search.py, crud.match_one).
"""

from __future__ import annotations

from fhirserver.search.extract import INDEX_CUT, normalize
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    CompositePredicate,
    HasPredicate,
    Predicate,
    ReferencePredicate,
    SearchQuery,
    StringPredicate,
    TokenPredicate,
    UriPredicate,
)


def _long(text: str | None) -> bool:
    return text is not None and len(text) >= INDEX_CUT


def _touches_cut(p: Predicate) -> bool:
    if isinstance(p, StringPredicate):
        return p.mode == "contains" or _long(p.value) or _long(normalize(p.value))
    if isinstance(p, TokenPredicate):
        return _long(p.code) or _long(p.system)
    if isinstance(p, UriPredicate):
        return _long(p.value)
    if isinstance(p, ReferencePredicate):
        return _long(p.url) or any(_long(url) for url in p.absolute)
    if isinstance(p, CompositePredicate):
        return any(_touches_cut(q) for q in p.components)
    if isinstance(p, AllOfPredicate):
        return any(_touches_cut(q) for clause in p.clauses for q in clause)
    return False


def _chains(p: Predicate) -> bool:
    if isinstance(p, ChainPredicate | HasPredicate):
        return True
    if isinstance(p, AllOfPredicate):
        return any(_chains(q) for clause in p.clauses for q in clause)
    return False


def needs_confirmation(query: SearchQuery) -> bool:
    """Whether the store's matches of `query` may include resources that do not match,
    so that each must be confirmed on the resource itself. Chained and `_has` searches
    are not confirmed (the matcher would need the store): a value of 256 characters or
    more in a chain may match on its first 256."""
    predicates = [p for clause in query.clauses for p in clause]
    return any(_touches_cut(p) for p in predicates) and not any(_chains(p) for p in predicates)
