"""Number and quantity search (R4 search.html#number, #quantity, with #prefix).

A number without a prefix (or with `eq`/`ne`) stands for the range its precision
implies: `0.5` is [0.45, 0.55), `100` is [99.5, 100.5). `sa` and `eb` mean the target
lies wholly above / below that range (search.html#prefix); with `gt lt ge le` the
precision is ignored, as HAPI does. A Range target is its own range. A quantity is
`[prefix][number]|[system]|[code]`; `[number]||[code]` matches the code or the unit;
a bare number matches whatever the units.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import observation, risk, search, search_error, seed, seeded

UCUM = "http://unitsofmeasure.org"


RISKS = [
    risk("r020", probabilityDecimal=0.2),
    risk("r050", probabilityDecimal=0.5),
    risk("r052", probabilityDecimal=0.52),
    risk("r058", probabilityDecimal=0.58),
    risk("r080", probabilityDecimal=0.8),
    risk("range", probabilityRange={"low": {"value": 0.4}, "high": {"value": 0.6}}),
    risk("none"),
]
WITH_VALUE = {r["id"] for r in RISKS} - {"none"}


risks = seeded(RISKS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 0.5 is [0.45, 0.55): 0.52 is equal at that precision, 0.58 is not.
        ("0.5", {"r050", "r052"}),
        ("eq0.5", {"r050", "r052"}),
        # 0.50 is [0.495, 0.505).
        ("0.50", {"r050"}),
        ("0.52", {"r052"}),
        ("0.520", {"r052"}),
        ("0.8", {"r080"}),
        ("0.2", {"r020"}),
        ("0.3", set()),
        # Exponential form: 5e-1 is 0.5 to one significant figure, [0.45, 0.55).
        ("5e-1", {"r050", "r052"}),
        ("8.0e-1", {"r080"}),
        # A Range is not inside any of these.
        ("0.4", set()),
        ("0.6", {"r058"}),
    ],
)
async def test_number_precision(risks: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(risks, "RiskAssessment", {"probability": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ne0.5", {"r020", "r058", "r080", "range"}),
        # The search.html example: probability=gt0.8, and its exponential form.
        ("gt0.8", set()),
        ("gt8e-1", set()),
        ("ge0.8", {"r080"}),
        ("gt0.5", {"r052", "r058", "r080", "range"}),
        ("lt0.5", {"r020", "range"}),
        ("ge0.5", {"r050", "r052", "r058", "r080", "range"}),
        ("le0.5", {"r020", "r050", "range"}),
        # Above / below all of [0.45, 0.55): 0.52 is within it.
        ("sa0.5", {"r058", "r080"}),
        ("eb0.5", {"r020"}),
        # Within 10% of 0.5: [0.45, 0.55], and the Range overlapping it.
        ("ap0.5", {"r050", "r052", "range"}),
        ("lt0.2", set()),
        ("le0.2", {"r020"}),
        ("gt0.79", {"r080"}),
    ],
)
async def test_number_prefixes(risks: httpx.AsyncClient, value: str, expected: set[str]) -> None:
    assert await search(risks, "RiskAssessment", {"probability": value}) == expected


async def test_number_or_and(risks: httpx.AsyncClient) -> None:
    assert await search(risks, "RiskAssessment", {"probability": "0.2,0.8"}) == {"r020", "r080"}
    interval = [("probability", "gt0.3"), ("probability", "lt0.7")]
    assert await search(risks, "RiskAssessment", interval) == {
        "r050",
        "r052",
        "r058",
        "range",
    }
    assert (
        await search(risks, "RiskAssessment", [("probability", "0.2"), ("probability", "0.8")])
        == set()
    )


def sequence(sid: str, *starts: int) -> dict[str, Any]:
    return {
        "resourceType": "MolecularSequence",
        "id": sid,
        "coordinateSystem": 0,
        "variant": [{"start": start, "end": start + 1} for start in starts],
    }


async def test_number_on_integers(client: httpx.AsyncClient) -> None:
    """search.html#number: against an integer, a value without decimals is an exact
    match, and one with non-zero decimals cannot match."""
    await seed(
        client,
        [sequence("s99", 99), sequence("s100", 100), sequence("s101", 101), sequence("s2", 5, 100)],
    )
    for value, expected in (
        ("100", {"s100", "s2"}),
        ("100.0", {"s100", "s2"}),
        ("100.5", set()),
        ("gt99", {"s100", "s101", "s2"}),
        ("lt100", {"s99", "s2"}),
        ("ne100", {"s99", "s101", "s2"}),
    ):
        got = await search(client, "MolecularSequence", {"variant-start": value})
        assert got == expected, value


def quantity(oid: str, value: float, **units: str) -> dict[str, Any]:
    return observation("2345-7", id=oid, valueQuantity={"value": value, **units})


QUANTITIES = [
    quantity("ucum-mg", 5.4, unit="mg", system=UCUM, code="mg"),
    quantity("acme-mg", 5.4, unit="milligrams", system="http://acme.org/units", code="mg"),
    quantity("unit-only", 5.4, unit="mg"),
    quantity("ucum-g", 5.4, unit="g", system=UCUM, code="g"),
    quantity("ucum-mg-7", 7.0, unit="mg", system=UCUM, code="mg"),
    quantity("ucum-mg-542", 5.42, unit="mg", system=UCUM, code="mg"),
    observation("2345-7", id="string-value", valueString="5.4 mg"),
]


quantities = seeded(QUANTITIES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A bare number: any unit. 5.4 is [5.35, 5.45).
        ("5.4", {"ucum-mg", "acme-mg", "unit-only", "ucum-g", "ucum-mg-542"}),
        ("5.40", {"ucum-mg", "acme-mg", "unit-only", "ucum-g"}),
        ("54e-1", {"ucum-mg", "acme-mg", "unit-only", "ucum-g", "ucum-mg-542"}),
        # number|system|code
        (f"5.4|{UCUM}|mg", {"ucum-mg", "ucum-mg-542"}),
        (f"5.40|{UCUM}|mg", {"ucum-mg"}),
        (f"5.4|{UCUM}|g", {"ucum-g"}),
        ("5.4|http://acme.org/units|mg", {"acme-mg"}),
        (f"5.4|{UCUM}|kg", set()),
        (f"7|{UCUM}|mg", {"ucum-mg-7"}),
        # number||code: the code or the unit.
        ("5.4||mg", {"ucum-mg", "acme-mg", "unit-only", "ucum-mg-542"}),
        ("5.4||milligrams", {"acme-mg"}),
        ("5.4||g", {"ucum-g"}),
        ("5.4||MG", set()),
    ],
)
async def test_quantity_units(
    quantities: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(quantities, "Observation", {"value-quantity": value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"lt6|{UCUM}|mg", {"ucum-mg", "ucum-mg-542"}),
        (f"le5.4|{UCUM}|mg", {"ucum-mg"}),
        (f"gt5.4|{UCUM}|mg", {"ucum-mg-7", "ucum-mg-542"}),
        (f"ge5.42|{UCUM}|mg", {"ucum-mg-7", "ucum-mg-542"}),
        (f"ne5.4|{UCUM}|mg", {"ucum-mg-7"}),
        # 5.42 lies within [5.35, 5.45), so it is not "starts after".
        (f"sa5.4|{UCUM}|mg", {"ucum-mg-7"}),
        (f"eb5.42|{UCUM}|mg", {"ucum-mg"}),
        # About 5.4 mg: within 10%.
        (f"ap5.4|{UCUM}|mg", {"ucum-mg", "ucum-mg-542"}),
        (f"ap7.5|{UCUM}|mg", {"ucum-mg-7"}),
        ("gt5.4", {"ucum-mg-7", "ucum-mg-542"}),
        ("ge5.4||mg", {"ucum-mg", "acme-mg", "unit-only", "ucum-mg-7", "ucum-mg-542"}),
        ("lt5.4", set()),
        ("lt100||g", {"ucum-g"}),
    ],
)
async def test_quantity_prefixes(
    quantities: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(quantities, "Observation", {"value-quantity": value}) == expected


async def test_quantity_or_and(quantities: httpx.AsyncClient) -> None:
    either = {"value-quantity": f"5.4|{UCUM}|g,7|{UCUM}|mg"}
    assert await search(quantities, "Observation", either) == {"ucum-g", "ucum-mg-7"}
    both = [("value-quantity", "gt5||mg"), ("value-quantity", f"lt6|{UCUM}|mg")]
    assert await search(quantities, "Observation", both) == {"ucum-mg", "ucum-mg-542"}


@pytest.mark.parametrize(
    ("resource_type", "name", "value"),
    [
        ("RiskAssessment", "probability", "abc"),
        ("RiskAssessment", "probability", "gtabc"),
        ("RiskAssessment", "probability", "0.5.1"),
        ("RiskAssessment", "probability", "NaN"),
        ("RiskAssessment", "probability", "Infinity"),
        ("RiskAssessment", "probability", "0x10"),
        ("RiskAssessment", "probability", "gt"),
        ("MolecularSequence", "variant-start", "abc"),
        ("Observation", "value-quantity", "abc"),
        ("Observation", "value-quantity", "abc|http://unitsofmeasure.org|mg"),
        ("Observation", "value-quantity", "5.4|mg"),
        ("Observation", "value-quantity", "5.4|a|b|c"),
    ],
)
async def test_malformed_number_is_400(
    client: httpx.AsyncClient, resource_type: str, name: str, value: str
) -> None:
    await search_error(client, resource_type, {name: value})


VITALS = [
    observation(id="v81", valueQuantity={"value": 81.224, "system": UCUM, "code": "kg"}),
    observation(id="v142", valueQuantity={"value": 142.89, "system": UCUM, "code": "mm[Hg]"}),
    observation(
        id="v136", valueQuantity={"value": 136.44756483911604, "system": UCUM, "code": "g"}
    ),
]
vitals = seeded(VITALS)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # 81 is [80.5, 81.5): 81.224 equals it and neither starts after nor ends before it.
        ("81", {"v81"}),
        ("sa81", {"v136", "v142"}),
        ("eb81", set()),
        ("sa80", {"v81", "v136", "v142"}),
        ("eb82", {"v81"}),
        # 143 is [142.5, 143.5): 142.89 does not end before it.
        ("eb143", {"v81", "v136"}),
        ("sa143", set()),
        # 142.9 is [142.85, 142.95), which holds 142.89; 142.8 is [142.75, 142.85).
        ("sa142.9", set()),
        ("eb142.9", {"v81", "v136"}),
        ("sa142.8", {"v142"}),
        # A value searched at its full stored precision equals itself (the half-open range
        # is computed exactly, not collapsed in float arithmetic).
        ("136.44756483911604", {"v136"}),
        ("ne136.44756483911604", {"v81", "v142"}),
        ("136.44756483911603", set()),
        ("136.4475648391160", {"v136"}),
    ],
)
async def test_quantity_precision_ranges(
    vitals: httpx.AsyncClient, value: str, expected: set[str]
) -> None:
    assert await search(vitals, "Observation", {"value-quantity": value}) == expected
