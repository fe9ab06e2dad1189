"""FHIR JSON (R4 json.html#primitive): decimals keep the precision their text carries;
nesting past the server's depth limit is a 400 (R4 http.html: bad syntax)."""

from __future__ import annotations

import pickle

import pytest

from fhirserver.errors import BadRequest
from fhirserver.resources import codec
from fhirserver.resources.codec import MAX_DEPTH, loads


@pytest.mark.parametrize("text", ["1.50", "0.000168", "1e2", "-0.0", "12345678901234567890.123"])
def test_decimals_round_trip_as_written(text: str) -> None:
    data = f'{{"value":{text}}}'.encode()
    assert codec.dumps(codec.loads(data)) == data


@pytest.mark.parametrize("text", ["1.50", "0.000168", "12345678901234567890"])
def test_decimals_keep_their_text_through_pickle(text: str) -> None:
    """`fhirserver import` sends parsed resources from worker processes by pickle."""
    value = pickle.loads(pickle.dumps(codec.loads(f'{{"value":{text}}}'.encode()), 5))
    assert isinstance(value["value"], codec.Decimal)
    assert codec.dumps(value) == f'{{"value":{text}}}'.encode()


def test_pretty_keeps_decimals() -> None:
    assert b'"value": 3.10' in codec.dumps(codec.loads(b'{"value":3.10}'), pretty=True)


@pytest.mark.parametrize("data", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1', b"\xff", b""])
def test_invalid_json_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest):
        codec.loads(data)


def test_load_object_wants_an_object() -> None:
    with pytest.raises(BadRequest):
        codec.load_object(b"[1]")


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
@pytest.mark.parametrize("padding", [0, 500])
def test_nesting_deeper_than_the_limit_is_400(depth: int, padding: int) -> None:
    """Refused by its depth alone, with other brackets beside the nesting or not."""
    text = '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)
    if padding:
        text = '{"pad": [' + ", ".join(["{}"] * padding) + '], "deep": ' + text + "}"
        depth += 1
    if depth > MAX_DEPTH:
        with pytest.raises(BadRequest, match="levels deep"):
            loads(text)
    else:
        assert isinstance(loads(text), dict)
