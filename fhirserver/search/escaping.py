"""Escaping in search values (R4 search.html#escaping).

`,` (OR), `$` (composite components) and `|` (token and quantity parts) separate values;
a backslash before one of them, or before another backslash, makes it part of the value.
Splitting keeps the escapes, so that a part can be split again on another separator;
`unescape` removes them once a value is whole.
"""

from __future__ import annotations

import re

from fhirserver.errors import BadRequest

_ESCAPE = re.compile(r"\\(.)")


def split_or(value: str) -> list[str]:
    """Split on unescaped commas; escapes stay for later."""
    parts = split_escaped(value, ",")
    if any(p == "" for p in parts):
        raise BadRequest(f"Empty value in search value {value!r:.80}")
    return parts


def split_escaped(value: str, separator: str) -> list[str]:
    """Split on `separator` where no backslash escapes it; `\\\\` is an escaped backslash.
    The parts keep their escapes, which `unescape` removes once a value is whole."""
    parts, current, position = [], [], 0
    while position < len(value):
        char = value[position]
        if char == "\\" and position + 1 < len(value):
            current.append(value[position : position + 2])
            position += 2
            continue
        if char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        position += 1
    parts.append("".join(current))
    return parts


def split_bars(value: str) -> list[str]:
    """The `|`-separated parts of a token or quantity, each unescaped."""
    return [unescape(part) for part in split_escaped(value, "|")]


def unescape(value: str) -> str:
    return _ESCAPE.sub(r"\1", value)
