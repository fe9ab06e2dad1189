"""Token modifiers that need terminology (R4 search.html#token): `:in` / `:not-in` a
ValueSet, `:below` / `:above` a code in a hierarchical CodeSystem. Each becomes one
`AllOfPredicate` over plain token predicates, so every store and the in-memory matcher
run it with what they already have: `:in` an OR of the set's codings, `:not-in` none
of them. The codes come from the R4 definitions the server ships
(resources/valuesets.py); what it cannot expand (SNOMED CT, LOINC, a ValueSet it does
not have) is a 400 that says so.
"""

from __future__ import annotations

from fhirserver.errors import BadRequest, NotSupported
from fhirserver.resources.valuesets import ancestors, descendants, expand, known_systems
from fhirserver.search.escaping import split_bars, unescape
from fhirserver.search.query import AllOfPredicate, Predicate, TokenPredicate

MODIFIERS = ("in", "not-in", "above", "below")
# The most codes one such search expands to: the query grows with them.
MAX_CODES = 1000


def token_set(code: str, modifier: str, value: str, name: str) -> Predicate:
    """`code:modifier=value` as one predicate."""
    codings = (
        _value_set(value, name)
        if modifier in ("in", "not-in")
        else _subsumed(modifier, value, name)
    )
    if not codings:
        raise BadRequest(f"{value!r} holds no codes to search for", expression=name)
    if len(codings) > MAX_CODES:
        raise BadRequest(
            f"{value!r} expands to {len(codings)} codes; at most {MAX_CODES} can be searched",
            expression=name,
        )
    # A coding matches by system and code; a `code` element (no system: the binding
    # implies it) by its code alone.
    alternatives = [TokenPredicate(code, system, token) for system, token in sorted(codings)]
    alternatives += [TokenPredicate(code, "", token) for token in sorted({t for _, t in codings})]
    if modifier == "not-in":
        negated = (TokenPredicate(p.param, p.system, p.code, negate=True) for p in alternatives)
        return AllOfPredicate(tuple((p,) for p in negated))
    return AllOfPredicate((tuple(alternatives),))


def _value_set(value: str, name: str) -> set[tuple[str, str]]:
    url = unescape(value)
    expansion = expand(url)
    if expansion is None:
        raise NotSupported(
            f"ValueSet {url!r} is not one this server can expand (it knows the R4 core "
            "ValueSets drawn from code systems it ships)",
            expression=name,
        )
    return set(expansion.codings)


def _subsumed(modifier: str, value: str, name: str) -> set[tuple[str, str]]:
    parts = [unescape(part) for part in split_bars(value)]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise BadRequest(f":{modifier} takes system|code, not {value!r}", expression=name)
    system, token = parts
    if system not in known_systems():
        raise NotSupported(
            f"Code system {system!r} is not one this server knows the hierarchy of",
            expression=name,
        )
    related = descendants(system, token) if modifier == "below" else ancestors(system, token)
    return {(system, token), *((system, other) for other in related)}
