"""FHIR JSON in and out, keeping every decimal exactly as the client wrote it.

FHIR decimals carry their precision in their text ("1.50" is not "1.5"), so a float
round-trip would change what the client stored. Decimals parse to `Decimal`, a float
that remembers its source text, and serialise back as that text.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from fhirserver.errors import BadRequest

JSONObject = dict[str, Any]


class Decimal(float):
    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Decimal:
        value = float.__new__(cls, text)
        value.text = text
        return value


# Deeper than any real resource, well inside what the parser, validators and orjson
# (255 levels) can take without running out of stack.
MAX_DEPTH = 100
# Integers past 64 bits cannot be written back by orjson; keep their text like a decimal.
_MAX_INT_DIGITS = 18


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _integer(text: str) -> int | Decimal:
    return Decimal(text) if len(text.lstrip("-")) > _MAX_INT_DIGITS else int(text)


_decoder = json.JSONDecoder(
    parse_float=Decimal, parse_int=_integer, parse_constant=_reject_constant
)


def loads(data: bytes | str, what: str = "Request body") -> Any:
    """Parse JSON text; raise BadRequest (400) with the position of a syntax error."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = _decoder.decode(text)
    except RecursionError:
        raise BadRequest(f"JSON nested more than {MAX_DEPTH} levels deep") from None
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    # A document holding no more brackets than MAX_DEPTH cannot nest deeper (brackets
    # inside strings only over-count): most resources skip the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and _too_deep(value):
        raise BadRequest(f"JSON nested more than {MAX_DEPTH} levels deep")
    return value


def _too_deep(value: Any) -> bool:
    # The top level is depth 1: a document may hold containers down to MAX_DEPTH.
    return type(value) in (dict, list) and _nests_deeper(value, MAX_DEPTH - 1)


def _nests_deeper(node: Any, levels: int) -> bool:
    """Whether containers nest more than `levels` below `node` (a dict or a list).
    Recursive, and testing exact types (the parser makes only dicts and lists): the walk
    of a Synthea Bundle took about 5 us a resource this way, against 20 with a stack of
    (node, depth) pairs; every large document the server parses is walked."""
    for child in node.values() if type(node) is dict else node:
        kind = type(child)
        if (kind is dict or kind is list) and (levels == 0 or _nests_deeper(child, levels - 1)):
            return True
    return False


def load_object(data: bytes | str, what: str = "Request body") -> JSONObject:
    value = loads(data, what)
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(value.text)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)
