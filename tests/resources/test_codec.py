"""FHIR JSON (R4 json.html#primitive): decimals keep the precision their text carries."""

from __future__ import annotations

import pytest

from fhirserver.errors import BadRequest
from fhirserver.resources import codec


@pytest.mark.parametrize("text", ["1.50", "0.000168", "1e2", "-0.0", "12345678901234567890.123"])
def test_decimals_round_trip_as_written(text: str) -> None:
    data = f'{{"value":{text}}}'.encode()
    assert codec.dumps(codec.loads(data)) == data


def test_pretty_keeps_decimals() -> None:
    assert b'"value": 3.10' in codec.dumps(codec.loads(b'{"value":3.10}'), pretty=True)


@pytest.mark.parametrize("data", [b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1', b"\xff", b""])
def test_invalid_json_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest):
        codec.loads(data)


def test_load_object_wants_an_object() -> None:
    with pytest.raises(BadRequest):
        codec.load_object(b"[1]")
