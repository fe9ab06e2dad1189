"""The one table of prefix meanings (search/prefixes.py, R4 search.html#prefix). Each
evaluator's reading of it is tested through searches: tests/search/test_match.py in
memory, tests/search/api/test_prefixes.py (hence this module's name) and the
differential test on every backend."""

from __future__ import annotations

from fhirserver.search.prefixes import PREFIXES, date_condition, number_condition
from fhirserver.search.time import now_micros


def test_the_table_knows_every_prefix() -> None:
    assert set(PREFIXES) == {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}


def test_ne_is_eq_negated() -> None:
    eq, ne = PREFIXES["eq"], PREFIXES["ne"]
    assert ne.comparisons == eq.comparisons and ne.negated and not eq.negated


def test_a_date_compares_with_its_range() -> None:
    assert date_condition("eq", 10, 20).terms == (("low", ">=", 10), ("high", "<=", 20))
    assert date_condition("gt", 10, 20).terms == (("high", ">", 20),)
    assert date_condition("sa", 10, 20).terms == (("low", ">=", 20),)
    assert date_condition("eb", 10, 20).terms == (("high", "<=", 10),)


def test_date_ap_widens_by_a_tenth_of_the_distance_from_now() -> None:
    now = now_micros()
    low, high = now - 1_000_000, now - 500_000
    (_, _, wide_high), (_, _, wide_low) = date_condition("ap", low, high).terms
    # A tenth of a second and then some: the clock moved on since `now`.
    assert low - 200_000 < wide_low <= low - 100_000
    assert wide_high - high == low - wide_low


def test_a_number_orders_against_its_value_and_equals_within_its_precision() -> None:
    # "100" stands for [99.5, 100.5).
    assert number_condition("eq", 100, 99.5, 100.5).terms == (
        ("low", ">=", 99.5),
        ("high", "<", 100.5),
    )
    assert number_condition("ge", 100, 99.5, 100.5).terms == (("high", ">=", 100),)
    assert number_condition("sa", 100, 99.5, 100.5).terms == (("low", ">=", 100.5),)
    assert number_condition("eb", 100, 99.5, 100.5).terms == (("high", "<", 99.5),)


def test_number_ap_is_the_value_give_or_take_a_tenth() -> None:
    condition = number_condition("ap", 100, 99.5, 100.5)
    assert condition.terms == (("low", "<=", 110.0), ("high", ">=", 90.0))
    assert not condition.negated
