"""The `_include` rounds every backend shares (storage/includes.py, R4
search.html#include), over an in-memory graph: the backends' lookups are tested end to
end in tests/search/api/test_results.py."""

from __future__ import annotations

from fhirserver.search.query import Include
from fhirserver.storage.includes import Key, follow_includes

# A chain of Observations, each pointing at the next through `derived-from`.
CHAIN = {("Observation", f"o{n}"): {("Observation", f"o{n + 1}")} for n in range(10)}
DERIVED = Include("Observation", "derived-from", "Observation", iterate=True)


LIMIT = 1000


async def _follow(
    includes: list[Include], matches: list[Key], graph: dict[Key, set[Key]], limit: int = LIMIT
) -> tuple[list[Key], list[list[Key]]]:
    """The included keys, and every load the rounds asked for."""
    loads: list[list[Key]] = []

    async def reach(include: Include, frontier: list[Key]) -> set[Key]:
        return set().union(*(graph.get(key, set()) for key in frontier))

    async def load(keys: list[Key]) -> list[Key]:
        loads.append(keys)
        return [key for key in keys if key != ("Observation", "gone")]

    included = await follow_includes(includes, matches, lambda key: key, reach, load, limit)
    return included.resources, loads


async def test_only_iterate_includes_go_past_the_first_round() -> None:
    once = Include("Observation", "derived-from", "Observation")
    found, _ = await _follow([once], [("Observation", "o0")], CHAIN)
    assert found == [("Observation", "o1")]


async def test_iterate_goes_on_until_nothing_new_is_reached() -> None:
    found, loads = await _follow([DERIVED], [("Observation", "o0")], CHAIN)
    # o1 ... o10, then a round that reaches nothing.
    assert found == [("Observation", f"o{n}") for n in range(1, 11)]
    assert len(loads) == 11


async def test_the_bound_cuts_iteration_and_says_so() -> None:
    async def reach(include: Include, frontier: list[Key]) -> set[Key]:
        return set().union(*(CHAIN.get(key, set()) for key in frontier))

    async def load(keys: list[Key]) -> list[Key]:
        return keys

    cut = await follow_includes([DERIVED], [("Observation", "o0")], lambda k: k, reach, load, 3)
    assert cut.resources == [("Observation", f"o{n}") for n in range(1, 4)]
    assert not cut.complete
    whole = await follow_includes([DERIVED], [("Observation", "o0")], lambda k: k, reach, load, 10)
    assert len(whole.resources) == 10 and whole.complete


async def test_matches_and_seen_resources_are_not_included_again() -> None:
    cycle = {
        ("Patient", "a"): {("Patient", "b"), ("Patient", "a")},
        ("Patient", "b"): {("Patient", "a")},
    }
    link = Include("Patient", "link", iterate=True)
    found, _ = await _follow([link], [("Patient", "a")], cycle)
    assert found == [("Patient", "b")]


async def test_a_deleted_target_ends_its_branch() -> None:
    graph = {("Observation", "o0"): {("Observation", "gone")}}
    found, loads = await _follow([DERIVED], [("Observation", "o0")], graph)
    assert found == [] and loads == [[("Observation", "gone")]]


async def test_the_cut_keeps_the_first_keys_in_order() -> None:
    many = {("Patient", "a"): {("Observation", f"{n:05}") for n in range(LIMIT + 5)}}
    found, _ = await _follow([Include("Patient", "*")], [("Patient", "a")], many)
    assert found == [("Observation", f"{n:05}") for n in range(LIMIT)]


async def test_nothing_to_include_asks_nothing() -> None:
    assert await _follow([], [("Patient", "a")], {}) == ([], [])
    assert await _follow([DERIVED], [], CHAIN) == ([], [])
