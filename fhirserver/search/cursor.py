"""Opaque paging cursors (search.html#paging): the keyset position of a page boundary,
the sort values and id of the last (or first) entry, in a URL-safe token."""

from __future__ import annotations

import base64
import math
from typing import Any

import orjson

from fhirserver.errors import BadRequest


def encode_cursor(direction: str, values: list[Any]) -> str:
    tagged = [_tagged(value) for value in values]
    return base64.urlsafe_b64encode(orjson.dumps([direction, *tagged])).decode().rstrip("=")


def _tagged(value: Any) -> Any:
    """JSON has no infinity (orjson writes null): the sort key of a range open at one
    end (search/extract.py) is written {"inf": 1} or {"inf": -1}."""
    if isinstance(value, float) and math.isinf(value):
        return {"inf": 1 if value > 0 else -1}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict) and value.keys() == {"inf"} and value["inf"] in (1, -1):
        return math.inf * value["inf"]
    return value


def decode_cursor(cursor: str) -> tuple[str, list[Any]]:
    """("after" | "before", the boundary's key values)."""
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest("Invalid paging cursor", expression="_cursor") from None
    if not isinstance(decoded, list) or not decoded or decoded[0] not in ("after", "before"):
        raise BadRequest("Invalid paging cursor", expression="_cursor")
    values = [_untagged(value) for value in decoded[1:]]
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise BadRequest("Invalid paging cursor", expression="_cursor")
    return decoded[0], values
