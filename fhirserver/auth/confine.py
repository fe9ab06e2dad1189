"""What an `Access` may see, written into the search itself (DESIGN.md "Authorization").

A search under a token reaches only what the policy's alternatives allow: each searched
type gets an OR of its alternatives (a patient's compartment AND a granular restriction),
as one more clause of the `SearchQuery`. Because it is part of the query, paging, totals
and every backend see the same confined search; the in-memory matcher checks single
resources the same way (`visible`), for what a search does not select itself: `_include`
and `_revinclude` results, history versions, reads.

Chains and `_has` read other resources: their targets (and sources) are confined too, so
a search cannot learn through a chain what the token may not search directly (SMART 2.2
"scopes-and-launch-context": a scope is a permission to the resources, whichever way they
are reached).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from fhirserver.auth.access import Access
from fhirserver.auth.compartment import membership, patient_ids
from fhirserver.auth.policy import (
    UNRESTRICTED,
    Alternative,
    alternatives,
    may_write,
    restriction_query,
)
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import Forbidden
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    Predicate,
    SearchQuery,
)

Resource = dict[str, object]


def confine(query: SearchQuery, access: Access, interaction: Interaction) -> SearchQuery:
    """`query` narrowed to what `access` may `interaction` (search, or a conditional
    write's match). A type it may not reach at all is left out of a system search and
    refused (403) when it is the only one; inside the allowed types, what lies outside
    the token's compartment or restriction simply does not match (SMART: a search for
    another patient's data finds nothing, it is not an error)."""
    reach = {name: _reach(access, interaction, name) for name in query.resource_types}
    allowed = tuple(name for name in query.resource_types if reach[name])
    if not allowed:
        names = ", ".join(query.resource_types[:3])
        raise Forbidden(f"The access token does not allow {interaction.value} on {names}")
    clauses = tuple(
        tuple(_confine_predicate(predicate, access) for predicate in clause)
        for clause in query.clauses
    )
    if len(allowed) == 1 and len(reach[allowed[0]]) == 1:
        # One type, one alternative (the usual patient-context search): its conditions
        # become plain clauses, which a backend can drive an index lookup from.
        clauses = (*_all_of(allowed[0], reach[allowed[0]][0]).clauses, *clauses)
    elif any(reach[name] != (UNRESTRICTED,) for name in allowed):
        options = tuple(_all_of(name, option) for name in allowed for option in reach[name])
        clauses = (options, *clauses)
    return replace(query, resource_types=allowed, clauses=clauses)


def visible(access: Access, interaction: Interaction, resource: Resource) -> bool:
    """Whether `access` may `interaction` this one resource (read, search for it)."""
    return may_write(access, interaction, dict(resource), patient_ids)


def unrestricted(access: Access, interaction: Interaction, resource_types: Iterable[str]) -> bool:
    """Whether `access` may `interaction` every resource of these types: then nothing
    needs checking one by one."""
    return all(
        alternatives(access, interaction, name) == (UNRESTRICTED,) for name in resource_types
    )


def _reach(access: Access, interaction: Interaction, resource_type: str) -> tuple[Alternative, ...]:
    """The alternatives a search can express (an unreadable granular restriction grants
    nothing: policy.restriction_query)."""
    return tuple(
        option
        for option in alternatives(access, interaction, resource_type)
        if not option.restriction or restriction_query(resource_type, option.restriction)
    )


def _all_of(resource_type: str, option: Alternative) -> AllOfPredicate:
    clauses: list[tuple[Predicate, ...]] = []
    if option.compartment is not None:
        clauses.append(membership(resource_type, option.compartment))
    if option.restriction:
        query = restriction_query(resource_type, option.restriction)
        assert query is not None  # _reach kept only readable restrictions
        clauses.extend(query.clauses)
    return AllOfPredicate(tuple(clauses), resource_type)


def _confine_predicate(predicate: Predicate, access: Access) -> Predicate:
    """Chains and `_has` (at any depth) reach only resources the token may search."""
    if isinstance(predicate, ChainPredicate):
        targets = tuple(
            name for name in predicate.target_types if _reach(access, Interaction.SEARCH, name)
        )
        if not targets:
            raise Forbidden(
                f"The access token does not allow searching through {predicate.param!r}"
            )
        inner = _within(_confine_predicate(predicate.inner, access), access, targets)
        return replace(predicate, target_types=targets, inner=inner)
    if isinstance(predicate, HasPredicate):
        if not _reach(access, Interaction.SEARCH, predicate.source_type):
            raise Forbidden(f"The access token does not allow searching {predicate.source_type}")
        inner = _within(
            _confine_predicate(predicate.inner, access), access, (predicate.source_type,)
        )
        return replace(predicate, inner=inner)
    if isinstance(predicate, AllOfPredicate):
        clauses = tuple(
            tuple(_confine_predicate(member, access) for member in clause)
            for clause in predicate.clauses
        )
        return replace(predicate, clauses=clauses)
    return predicate


def _within(inner: Predicate, access: Access, resource_types: tuple[str, ...]) -> Predicate:
    """`inner`, met only by resources of `resource_types` the token may search."""
    reach = {name: _reach(access, Interaction.SEARCH, name) for name in resource_types}
    if all(options == (UNRESTRICTED,) for options in reach.values()):
        return inner
    options = tuple(_all_of(name, option) for name in resource_types for option in reach[name])
    return AllOfPredicate(((inner,), options))
