"""`_include` and `_revinclude` (R4 search.html#include): the rounds every backend runs.

Round one follows every include from the page's matches; each later round follows the
`:iterate` ones from what the round before brought in. A resource is included once,
and never when it is a match. The backend answers the two questions the rounds ask, in
its own query language: which resources an include leads to, and the current versions
of those resources.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from fhirserver.search.query import Include

# Rounds of :iterate, and resources included per page: enough for real graphs, and bounded.
MAX_INCLUDE_ROUNDS = 4
MAX_INCLUDED = 1000

# A resource as (type, id).
Key = tuple[str, str]
# How the backend holds a resource: a Version, a document.
R = TypeVar("R")


async def follow_includes(
    includes: Sequence[Include],
    matches: Sequence[R],
    key: Callable[[R], Key],
    reach: Callable[[Include, list[R]], Awaitable[set[Key]]],
    load: Callable[[list[Key]], Awaitable[list[R]]],
) -> list[R]:
    """The included resources, in (type, id) order within each round.

    `reach(include, resources)`: the keys the include leads to from these resources (the
    targets of their references, or for a reverse include the resources referring to
    them). `load(keys)`: the current, not deleted, resources among these keys, in order.
    """
    if not includes or not matches:
        return []
    seen = {key(match) for match in matches}
    frontier = list(matches)
    found: list[R] = []
    for round_number in range(MAX_INCLUDE_ROUNDS):
        active = [i for i in includes if round_number == 0 or i.iterate]
        if not active or not frontier:
            break
        reached: set[Key] = set()
        for include in active:
            reached |= await reach(include, frontier)
        # Sorted before the cut, so that which resources a full page keeps is stable.
        new = sorted(reached - seen)[: MAX_INCLUDED - len(found)]
        seen.update(new)
        frontier = await load(new)
        found.extend(frontier)
    return found
