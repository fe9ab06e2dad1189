"""Values as a profile compares them (R4 elementdefinition.html#ElementDefinition.fixed_x_,
#pattern_x_, profiling.html#discriminator)."""

from __future__ import annotations

from typing import Any


def equals_fixed(value: Any, fixed: Any) -> bool:
    """fixed[x]: exactly equal (an extension on the instance aside)."""
    if isinstance(fixed, dict) and isinstance(value, dict):
        return all(key in value and equals_fixed(value[key], v) for key, v in fixed.items()) and (
            set(value) - {"id", "extension"} <= set(fixed)
        )
    if isinstance(fixed, list) and isinstance(value, list):
        return len(fixed) == len(value) and all(map(equals_fixed, value, fixed))
    return bool(value == fixed)


def contains_pattern(value: Any, pattern: Any) -> bool:
    """pattern[x]: every value the pattern has, the instance has too; a list in the
    pattern is matched item by item against any item of the instance's list."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and contains_pattern(value[key], v) for key, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(contains_pattern(item, p) for item in items) for p in pattern)
    return bool(value == pattern)


def values_at(item: Any, path: str) -> list[Any]:
    """What a discriminator path (`coding.code`, `$this`) finds in one item, lists
    flattened as FHIRPath does."""
    found = [item]
    if path == "$this":
        return found
    for step in path.split("."):
        following: list[Any] = []
        for node in found:
            child = node.get(step) if isinstance(node, dict) else None
            if isinstance(child, list):
                following.extend(child)
            elif child is not None:
                following.append(child)
        found = following
    return found


def discriminated(item: Any, kind: str, path: str, expected: Any) -> bool:
    """Whether an item holds the value a slice expects at a discriminator path: `value`
    compares as fixed (or pattern, when the slice gives a pattern), `pattern` as pattern."""
    found = values_at(item, path)
    if kind == "value" and not isinstance(expected, dict | list):
        return any(value == expected for value in found)
    return any(contains_pattern(value, expected) for value in found)
