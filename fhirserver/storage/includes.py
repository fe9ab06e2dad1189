"""`_include` and `_revinclude` (R4 search.html#include): the rounds every backend runs.

Round one follows every include from the page's matches; each later round follows the
`:iterate` ones from what the round before brought in, until a round brings in nothing
new. A resource is included once, and never when it is a match. What bounds the work
is the number of resources included (the query's `max_included`); a cut there is
reported, so the Bundle can say it is incomplete (search.html#include lets a server
limit iteration, and a client must be able to tell). The backend answers the two
questions the rounds ask, in its own query language: which resources an include leads
to, and the current versions of those resources.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fhirserver.search.query import Include

# A resource as (type, id).
Key = tuple[str, str]
# How the backend holds a resource: a Version, a document.
R = TypeVar("R")


@dataclass(frozen=True)
class Included(Generic[R]):
    resources: list[R]
    # False when the bound on included resources cut the rounds short.
    complete: bool = True


async def follow_includes(
    includes: Sequence[Include],
    matches: Sequence[R],
    key: Callable[[R], Key],
    reach: Callable[[Include, list[R]], Awaitable[set[Key]]],
    load: Callable[[list[Key]], Awaitable[list[R]]],
    limit: int,
) -> Included[R]:
    """The included resources, in (type, id) order within each round, at most `limit`.

    `reach(include, resources)`: the keys the include leads to from these resources (the
    targets of their references, or for a reverse include the resources referring to
    them). `load(keys)`: the current, not deleted, resources among these keys, in order.
    """
    if not includes or not matches:
        return Included([])
    seen = {key(match) for match in matches}
    frontier = list(matches)
    found: list[R] = []
    first = True
    # Each round includes something new or ends the loop, so `limit` bounds the rounds.
    while frontier:
        active = [i for i in includes if first or i.iterate]
        first = False
        if not active:
            break
        reached: set[Key] = set()
        for include in active:
            reached |= await reach(include, frontier)
        # Sorted before the cut, so that which resources a full page keeps is stable.
        new = sorted(reached - seen)
        room = limit - len(found)
        if len(new) > room:
            found.extend(await load(new[:room]))
            return Included(found, complete=False)
        seen.update(new)
        frontier = await load(new)
        found.extend(frontier)
    return Included(found)
