"""Search result parameters read into a SearchQuery (R4 search.html#sort, #count,
#include, #revinclude, #summary, #elements, #total): what each one becomes, and what is
refused. tests/search/api/test_results.py drives the same parameters over HTTP."""

from __future__ import annotations

import pytest

from fhirserver.errors import BadRequest
from fhirserver.search.query import Include, SearchQuery, SortKey
from fhirserver.search.result_params import MAX_COUNT, with_results

ENCOUNTERS = SearchQuery(("Encounter",), count=20)


def shaped(**results: list[str]) -> SearchQuery:
    """`with_results` on an Encounter search; `revinclude_iterate` names `_revinclude:iterate`."""
    named = {name.replace("_iterate", ":iterate"): values for name, values in results.items()}
    return with_results(ENCOUNTERS, named, MAX_COUNT)


def test_no_result_parameters_leave_the_query_as_it_was() -> None:
    assert shaped() == ENCOUNTERS


def test_sort_keys_carry_direction_and_parameter_type() -> None:
    assert shaped(_sort=["-date, _id,status"]).sort == (
        SortKey("date", True, "date"),
        SortKey("_id", False, "special"),
        SortKey("status", False, "token"),
    )


@pytest.mark.parametrize("value", ["nonsense", "_has", "-", "date,"])
def test_sort_by_what_cannot_be_sorted_is_refused(value: str) -> None:
    with pytest.raises(BadRequest, match="Cannot sort by"):
        shaped(_sort=[value])


def test_count_is_capped_and_the_last_value_counts() -> None:
    assert shaped(_count=["5", "7"]).count == 7
    assert shaped(_count=["0"]).count == 0
    assert with_results(ENCOUNTERS, {"_count": ["5000"]}, 100).count == 100


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "\uff11", "1234567890"])
def test_count_must_be_a_whole_number(value: str) -> None:
    # "\uff11" (FULLWIDTH DIGIT ONE) is a digit to str.isdigit, but not ASCII.
    with pytest.raises(BadRequest, match="_count must be a whole number"):
        shaped(_count=[value])


def test_includes_add_up() -> None:
    query = shaped(
        _include=["Encounter:subject:Patient", "*"],
        _revinclude_iterate=["Observation:encounter"],
    )
    assert query.includes == (
        Include("Encounter", "subject", "Patient"),
        Include("*", "*"),
        Include("Observation", "encounter", None, reverse=True, iterate=True),
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("_include", "Encounter", "takes Type:param"),
        ("_include", "Nothing:subject", "takes Type:param"),
        ("_include", "Encounter:subject:Nothing", "Unknown target type"),
        ("_include", "Encounter:status", "is not a reference parameter"),
        ("_include:deep", "Encounter:subject", "Modifier :deep does not apply to a _include"),
    ],
)
def test_invalid_includes_are_refused(name: str, value: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        with_results(ENCOUNTERS, {name: [value]}, MAX_COUNT)


def test_summary_elements_total_and_cursor() -> None:
    query = shaped(_summary=["text"], _elements=["status, ,class"], _total=["accurate"])
    assert (query.summary, query.elements, query.total) == ("text", ("status", "class"), "accurate")
    assert shaped(_cursor=["opaque"]).cursor == "opaque"


def test_invalid_summary_and_total_are_refused_naming_the_modes() -> None:
    """The modes in the order search.html#summary and #total list them."""
    with pytest.raises(BadRequest) as summary:
        shaped(_summary=["all"])
    assert str(summary.value) == "_summary must be one of true, text, data, count, false"
    with pytest.raises(BadRequest) as total:
        shaped(_total=["exact"])
    assert str(total.value) == "_total must be one of none, estimate, accurate"
