"""When an invariant's answer is known from which keys a node has, without FHIRPath.

fhirpathpy costs 10-40 µs per evaluation; most R4 invariants are decided by presence:
`dataAbsentReason.empty() or value.empty()` (obs-6), `code.empty() or system.exists()`
(qty-3), or `X.where(...).empty()` on a node without X. An expression is split into its
top-level `or` parts (when no `implies` or `xor` sits at the top, `or` is the loosest
operator, so the parts are exactly its operands). Each part is decided, if it can be:
- natively, when it is a conjunction of `name.exists()` / `name.empty()` (optionally
  `.not()`): the answer is which keys are present;
- from its absent answer, computed once on an empty node, when the node has none of the
  keys the part can read (the first steps of its paths).
`true` in any part decides the whole; when every part is decided the whole is their `or`
in FHIRPath's three-valued logic; otherwise fhirpathpy evaluates the expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhirserver.resources.definitions import is_resource_type
from fhirserver.resources.schema import choice_keys, elements

STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
# A function called on the context itself (not after a dot), or a variable naming the
# context or another node: the part may read anything, so it is never decided by keys.
_READS_CONTEXT = re.compile(
    r"(?<![.\w`])(?!(?:iif|in|and|or|xor|implies|contains|is|as|div|mod)\b)[A-Za-z_]\w*\s*\("
    r"|%rootResource|%context|\$this"
)
# Identifiers not after a dot: the first steps of paths from the context (and, inside
# where(), from its items: a superset, which only makes deciding rarer).
_FIRST_STEP = re.compile(r"(?<![.\w`])(?:`([^`]*)`|([A-Za-z_][A-Za-z0-9_]*))")
_TERM = re.compile(r"([A-Za-z_]\w*)\.(exists|empty)\(\)(\.not\(\))?")
_TOP_WORD = re.compile(r"\b(or|and|implies|xor)\b")
# A part's value: True, False, or None for FHIRPath's empty.
Value = bool | None
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Part:
    # Natively: each (keys, wanted present) must hold for the part to be true.
    conjunction: tuple[tuple[frozenset[str], bool], ...] | None
    # Else the keys it may read (None: anything) and its answer when none is present.
    reads: frozenset[str] | None
    absent: Value | str

    def decide(self, node: Mapping[str, Any]) -> Value | str:
        if self.conjunction is not None:
            return all((not keys.isdisjoint(node)) is present for keys, present in self.conjunction)
        if self.reads is not None and self.reads.isdisjoint(node):
            return self.absent
        return UNKNOWN


@dataclass(frozen=True, slots=True)
class Shortcut:
    parts: tuple[Part, ...]

    def decide(self, node: Mapping[str, Any]) -> bool | None:
        """Whether the invariant holds (empty holds), or None to evaluate it."""
        values = []
        for part in self.parts:
            value = part.decide(node)
            if value is True:
                return True
            values.append(value)
        if UNKNOWN in values:
            return None
        return any(value is None for value in values)


def shortcut(
    definition: str, expression: str, absent: Callable[[str], list[Any]]
) -> Shortcut | None:
    """The shortcut for `expression` on `definition`; `absent(part)` evaluates a part on
    an empty node. None when no part can ever be decided."""
    parts = tuple(_part(definition, text, absent) for text in _disjuncts(expression))
    if all(p.conjunction is None and (p.reads is None or p.absent == UNKNOWN) for p in parts):
        return None
    return Shortcut(parts)


def reads(definition: str, expression: str) -> frozenset[str] | None:
    """Every key of the definition a first step of the expression may name. `%resource`
    is the context itself on a resource (its paths start with the same names)."""
    text = STRING_LITERAL.sub("''", expression)
    if _READS_CONTEXT.search(text):
        return None
    if "%resource" in text and not is_resource_type(definition):
        return None
    # On a resource, `%resource.code` reads the node's own `code`: a first step too.
    text = text.replace("%resource.", " ")
    names = {quoted or plain for quoted, plain in _FIRST_STEP.findall(text)}
    found: set[str] = set()
    for name in names:
        found.update(_keys(definition, name))
    return frozenset(found)


def _keys(definition: str, name: str) -> frozenset[str]:
    """The JSON keys that element `name` may take, with their `_` extension twins."""
    keys = {name} | choice_keys(definition, name)
    return frozenset(key for key in keys | {f"_{k}" for k in keys} if key in elements(definition))


def _part(definition: str, text: str, absent: Callable[[str], list[Any]]) -> Part:
    conjunction = _conjunction(definition, text)
    if conjunction is not None:
        return Part(conjunction, None, UNKNOWN)
    part_reads = reads(definition, text)
    value: Value | str = UNKNOWN
    if part_reads is not None:
        try:
            result = absent(text)
        except Exception:  # fhirpathpy raises bare Exceptions; then it is not decided here
            result = ["?"]
        value = {(True,): True, (False,): False, (): None}.get(tuple(result), UNKNOWN)
    return Part(None, part_reads, value)


def _conjunction(definition: str, text: str) -> tuple[tuple[frozenset[str], bool], ...] | None:
    terms = []
    for term in _top_split(_unwrap(text), "and"):
        match = _TERM.fullmatch(term.strip())
        if match is None:
            return None
        name, function, negated = match.groups()
        terms.append((_keys(definition, name), (function == "exists") != bool(negated)))
    return tuple(terms)


def _disjuncts(expression: str) -> list[str]:
    words = {m[1] for m in _top_words(expression)}
    if words & {"implies", "xor"}:
        return [expression]
    return _top_split(expression, "or")


def _top_split(text: str, word: str) -> list[str]:
    parts, start = [], 0
    for match in _top_words(text):
        if match[1] == word:
            parts.append(text[start : match.start()].strip())
            start = match.end()
    parts.append(text[start:].strip())
    return parts


def _top_words(text: str) -> list[re.Match[str]]:
    """The operator words outside any parentheses, string or backquoted name."""
    found, depth, quote = [], 0, ""
    position = 0
    while position < len(text):
        char = text[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and (match := _TOP_WORD.match(text, position)):
            before = text[position - 1] if position else " "
            if not (before.isalnum() or before in "._"):
                found.append(match)
                position = match.end()
                continue
        position += 1
    return found


def _unwrap(text: str) -> str:
    """The text without parentheses that enclose all of it."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _closes_at_end(text):
        text = text[1:-1].strip()
    return text


def _closes_at_end(text: str) -> bool:
    depth = 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and index < len(text) - 1:
            return False
    return True
