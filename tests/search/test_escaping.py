"""Escaping in search values (R4 search.html#escaping): `\\,` `\\$` `\\|` and `\\\\` are
part of a value; unescaped, `,` `$` and `|` separate values."""

from __future__ import annotations

import pytest

from fhirserver.errors import BadRequest
from fhirserver.search.escaping import split_bars, split_escaped, split_or, unescape


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (r"a\,b", [r"a\,b"]),
        # An escaped backslash escapes nothing after it.
        ("a\\\\,b", ["a\\\\", "b"]),
        # A lone backslash at the end is kept as it is.
        ("a\\", ["a\\"]),
    ],
)
def test_or_splits_on_unescaped_commas_and_keeps_the_escapes(value: str, parts: list[str]) -> None:
    assert split_or(value) == parts


@pytest.mark.parametrize("value", ["", "a,", ",a", "a,,b"])
def test_an_empty_alternative_is_refused(value: str) -> None:
    with pytest.raises(BadRequest, match="Empty value"):
        split_or(value)


def test_composite_components_split_on_unescaped_dollars() -> None:
    assert split_escaped(r"code$a\$b", "$") == ["code", r"a\$b"]
    assert split_escaped("a$", "$") == ["a", ""]


def test_bars_split_and_unescape_each_part() -> None:
    assert split_bars(r"urn:a|x\|y") == ["urn:a", "x|y"]
    assert split_bars("|code") == ["", "code"]
    assert split_bars(r"5.4|\,s|mg") == ["5.4", ",s", "mg"]


@pytest.mark.parametrize(
    ("value", "plain"),
    [(r"a\,b", "a,b"), (r"a\$b", "a$b"), (r"a\|b", "a|b"), ("a\\\\b", "a\\b"), ("a\\", "a\\")],
)
def test_unescape(value: str, plain: str) -> None:
    assert unescape(value) == plain
