"""The in-memory matcher, one predicate type at a time (R4 search.html#string, #token,
#date, #number, #quantity, #reference, #uri, #composite, #modifiers (:missing, :not,
:exact, :contains, :below, :above), #prefix, #chaining, #has, #all (_id, _lastUpdated),
#combining): the same answers the SQLite compiler gives, from the resource alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhirserver.errors import NotSupported
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    CompositePredicate,
    IdPredicate,
    MissingPredicate,
    NumberPredicate,
    SearchQuery,
    TokenPredicate,
)

Resource = dict[str, Any]

PATIENT: Resource = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.123456Z"},
    "name": [{"family": "Müller", "given": ["Ann", "Éva"]}],
    "gender": "female",
    "birthDate": "2000-06-15",
    "active": True,
    "identifier": [{"system": "urn:mrn", "value": "123"}, {"value": "x"}],
    "address": [{"city": "São Paulo"}],
}
UCUM = "http://unitsofmeasure.org"
OBSERVATION: Resource = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}], "text": "Glucose"},
    "subject": {"reference": "Patient/p1"},
    "effectivePeriod": {"start": "2021-03-04"},
    "valueQuantity": {"value": 5.5, "system": UCUM, "code": "mg", "unit": "milligram"},
}


def hit(resource: Resource, *params: tuple[str, str], **context: Any) -> bool:
    query = parse_search((resource["resourceType"],), params, strict=True)
    return matches(query, resource, **context)


def patient(**fields: Any) -> Resource:
    return {**PATIENT, **fields}


# --- The query as a whole (search.html#combining) ----------------------------------------


def test_resource_type_must_be_searched() -> None:
    assert matches(SearchQuery(("Patient",)), PATIENT)
    assert not matches(SearchQuery(("Observation",)), PATIENT)
    assert matches(SearchQuery(("Observation", "Patient")), PATIENT)


def test_and_of_ors() -> None:
    assert hit(PATIENT, ("gender", "male,female"), ("family", "mul"))
    assert not hit(PATIENT, ("gender", "male,female"), ("family", "smith"))
    assert not hit(PATIENT, ("gender", "male,other"), ("family", "mul"))


# --- string ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("family", "mul", True),  # starts with, accents and case folded
        ("family", "MÜLLER", True),
        ("family", "üll", False),  # not the middle
        ("name", "eva", True),  # any part of the name
        ("given", "an", True),
        ("address-city", "sao p", True),
        ("family:exact", "Müller", True),
        ("family:exact", "Muller", False),  # exact: accents count
        ("family:exact", "müller", False),  # and case
        ("family:exact", "Mül", False),  # and the whole string
        ("family:contains", "ULL", True),
        ("family:contains", "ller", True),
        ("family:contains", "x", False),
    ],
)
def test_string(param: str, value: str, expected: bool) -> None:
    assert hit(PATIENT, (param, value)) is expected


def test_token_text_is_a_string_search() -> None:
    assert hit(OBSERVATION, ("code:text", "GLUC"))
    assert not hit(OBSERVATION, ("code:text", "cose"))


def test_string_folds_case_of_compatibility_characters() -> None:
    """U+210D DOUBLE-STRUCK CAPITAL H decomposes to an H, which must be folded too."""
    assert hit(patient(name=[{"family": "\u210denry"}]), ("family", "hen"))


def test_escaped_backslash_before_an_or() -> None:
    """search.html#escaping: `a\\\\,b` is the two values `a\\` and `b`."""
    assert hit(patient(name=[{"family": "a\\"}]), ("family:exact", "a\\\\,b"))


# --- token -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("gender", "female", True),
        ("gender", "male", False),
        ("gender:not", "male", True),
        ("gender:not", "female", False),
        ("active", "true", True),
        ("active", "false", False),
        ("identifier", "123", True),  # any system
        ("identifier", "urn:mrn|123", True),
        ("identifier", "urn:other|123", False),
        ("identifier", "|123", False),  # 123 has a system
        ("identifier", "|x", True),  # x has none
        ("identifier", "urn:mrn|", True),  # any code of the system
        ("identifier", "urn:other|", False),
        ("identifier:not", "x", False),  # :not: no identifier is x
        ("identifier:not", "urn:other|123", True),
    ],
)
def test_token(param: str, value: str, expected: bool) -> None:
    assert hit(PATIENT, (param, value)) is expected


def test_not_matches_a_resource_without_the_element() -> None:
    assert hit({"resourceType": "Patient", "id": "p2"}, ("gender:not", "female"))


def test_token_on_a_codeable_concept() -> None:
    assert hit(OBSERVATION, ("code", "http://loinc.org|1234-5"))
    assert not hit(OBSERVATION, ("code", "http://snomed.info/sct|1234-5"))


# --- date --------------------------------------------------------------------------------

# birthDate 2000-06-15 is the range [2000-06-15, 2000-06-16).


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2000", True),  # eq: the search range contains the stored one
        ("2000-06-15", True),
        ("2000-06-16", False),
        ("2000-06-15T12:00:00Z", False),  # the day is wider than the second
        ("ne2000", False),
        ("ne2001", True),
        ("gt2000-06-14", True),  # gt: the stored range reaches past the search range
        ("gt2000-06-15", False),
        ("ge2000-06-15", True),  # ge: ... past the start of the search range
        ("ge2000-06-16", False),
        ("lt2000-06-16", True),  # lt: the stored range starts before the search range
        ("lt2000-06-15", False),
        ("le2000-06-15", True),  # le: ... before its end
        ("le2000-06-14", False),
        ("sa2000-06-14", True),  # sa: starts at or after the end of the search range
        ("sa2000-06-15", False),
        ("eb2000-06-16", True),  # eb: ends at or before its start
        ("eb2000-06-15", False),
        ("ap2000-06-15", True),  # ap: the search range, widened, overlaps
        ("ap1900", False),
    ],
)
def test_date_prefixes(value: str, expected: bool) -> None:
    assert hit(PATIENT, ("birthdate", value)) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gt2030", True),  # an open end reaches past everything
        ("lt2021-03-04", False),
        ("le2021-03-04", True),
        ("2021", False),  # never contained
        ("ne2021", True),
        ("sa2021-03-03", True),
        ("eb2100", False),
    ],
)
def test_date_of_an_open_period(value: str, expected: bool) -> None:
    assert hit(OBSERVATION, ("date", value)) is expected


def test_date_with_a_time_zone() -> None:
    observation = {**OBSERVATION, "effectiveDateTime": "2021-03-05T00:30:00+02:00"}
    del observation["effectivePeriod"]
    assert hit(observation, ("date", "2021-03-04"))  # 22:30 UTC
    assert not hit(observation, ("date", "2021-03-05"))
    assert hit(observation, ("date", "2021-03-05T00:30:00+02:00"))


# --- number and quantity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5.5", True),
        ("5", False),  # [4.5, 5.5)
        ("6", True),  # [5.5, 6.5)
        ("5.50", True),  # [5.495, 5.505)
        ("5.6", False),
        ("ne5.5", False),
        ("ne5", True),
        ("gt5", True),
        ("gt5.5", False),
        ("ge5.5", True),
        ("lt6", True),
        ("lt5.5", False),
        ("le5.5", True),
        ("le5.4", False),
        ("sa5.4", True),
        ("sa5.5", False),
        ("eb5.6", True),
        ("eb5.5", False),
        ("ap5", True),  # 5 +- 0.5
        ("ap4.9", False),  # 4.9 +- 0.49
        ("5.5|http://unitsofmeasure.org|mg", True),
        ("5.5|http://unitsofmeasure.org|g", False),
        ("5.5|http://other|mg", False),
        ("5.5||mg", True),  # the unit code
        ("5.5||milligram", True),  # or the unit as written
        ("5.5||g", False),
        ("5.5|http://unitsofmeasure.org|", True),  # any unit of the system
        ("gt5|http://unitsofmeasure.org|mg", True),
        ("gt6|http://unitsofmeasure.org|mg", False),
    ],
)
def test_quantity(value: str, expected: bool) -> None:
    assert hit(OBSERVATION, ("value-quantity", value)) is expected


RISK: Resource = {
    "resourceType": "RiskAssessment",
    "id": "r1",
    "status": "final",
    "subject": {"reference": "Patient/p1"},
    "prediction": [{"probabilityRange": {"low": {"value": 0.2}, "high": {"value": 0.4}}}],
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.3", False),  # [0.25, 0.35) does not contain [0.2, 0.4]
        ("gt0.3", True),  # the range reaches above
        ("lt0.3", True),
        ("gt0.4", False),
        ("sa0.1", True),
        ("sa0.2", False),
        ("eb0.5", True),
        ("eb0.4", False),
        ("ne0.3", True),
    ],
)
def test_number_range(value: str, expected: bool) -> None:
    assert hit(RISK, ("probability", value)) is expected


def test_number_point() -> None:
    risk = {**RISK, "prediction": [{"probabilityDecimal": 0.5}]}
    assert hit(risk, ("probability", "0.5"))
    assert hit(risk, ("probability", "le0.5"))
    assert not hit(risk, ("probability", "lt0.5"))


def test_number_predicate_with_empty_unit_code_compares_it() -> None:
    """The SQL compares a code "" to the stored code; parse never makes one."""
    query = SearchQuery(
        ("Observation",),
        ((NumberPredicate("value-quantity", "eq", 5.5, 5.45, 5.55, True, None, ""),),),
    )
    assert not matches(query, OBSERVATION)


# --- reference ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("subject", "Patient/p1", True),
        ("subject", "p1", True),
        ("subject:Patient", "p1", True),
        ("subject:Group", "p1", False),
        ("subject", "Patient/p2", False),
        ("subject", "Group/p1", False),
        ("subject", "Patient/p1/_history/3", True),
        ("patient", "p1", True),
    ],
)
def test_reference(param: str, value: str, expected: bool) -> None:
    assert hit(OBSERVATION, (param, value)) is expected


def test_absolute_reference() -> None:
    observation = {**OBSERVATION, "subject": {"reference": "http://other.org/fhir/Patient/9"}}
    assert hit(observation, ("subject", "http://other.org/fhir/Patient/9"))
    assert not hit(observation, ("subject", "9"))
    assert not hit(observation, ("subject", "http://other.org/fhir/Patient/8"))


BASE = "http://server.test/fhir"


@pytest.mark.parametrize(
    ("stored", "value", "expected"),
    [
        (f"{BASE}/Patient/p1", "Patient/p1", True),  # stored absolute on this server
        (f"{BASE}/Patient/p1", "p1", True),
        (f"{BASE}/Patient/p1", f"{BASE}/Patient/p1", True),
        ("Patient/p1", f"{BASE}/Patient/p1", True),  # searched absolute on this server
        (f"{BASE}/Patient/p1", "Patient/p2", False),
        ("http://elsewhere.org/fhir/Patient/p1", "Patient/p1", False),
    ],
)
def test_reference_absolute_on_this_server(stored: str, value: str, expected: bool) -> None:
    observation = {**OBSERVATION, "subject": {"reference": stored}}
    query = parse_search(("Observation",), [("subject", value)], base_url=BASE)
    assert matches(query, observation) is expected


# --- uri ---------------------------------------------------------------------------------

VALUE_SET: Resource = {
    "resourceType": "ValueSet",
    "id": "v1",
    "status": "active",
    "url": "http://acme.org/fhir/ValueSet/x",
}


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("url", "http://acme.org/fhir/ValueSet/x", True),
        ("url", "http://acme.org/fhir", False),
        ("url:below", "http://acme.org/fhir", True),
        ("url:below", "http://acme.org/fhir/ValueSet/x/y", False),
        ("url:above", "http://acme.org/fhir/ValueSet/x/y", True),
        ("url:above", "http://acme.org/fhir", False),
    ],
)
def test_uri(param: str, value: str, expected: bool) -> None:
    assert hit(VALUE_SET, (param, value)) is expected


# --- :missing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "param", "value", "expected"),
    [
        (PATIENT, "birthdate:missing", "false", True),
        (PATIENT, "birthdate:missing", "true", False),
        (patient(birthDate=None), "birthdate:missing", "true", True),
        (PATIENT, "deceased:missing", "true", False),  # deceased is false unless stated
        (PATIENT, "email:missing", "true", True),
        (OBSERVATION, "value-quantity:missing", "false", True),
        (OBSERVATION, "value-string:missing", "true", True),
        (OBSERVATION, "code-value-quantity:missing", "false", True),  # composite: 1st part
        # A composite without its value component has no value (search.html#composite).
        (OBSERVATION, "code-value-date:missing", "true", True),
        (OBSERVATION, "code-value-concept:missing", "false", False),
        (OBSERVATION, "subject:missing", "false", True),
    ],
)
def test_missing(resource: Resource, param: str, value: str, expected: bool) -> None:
    resource = {key: item for key, item in resource.items() if item is not None}
    assert hit(resource, (param, value)) is expected


def test_missing_looks_only_at_entries_of_the_parameter_type() -> None:
    query = SearchQuery(("Patient",), ((MissingPredicate("gender", True, "string"),),))
    assert matches(query, PATIENT)  # gender has token entries, no string entries


# --- composite ---------------------------------------------------------------------------

PANEL: Resource = {
    "resourceType": "Observation",
    "id": "o2",
    "status": "final",
    "code": {"coding": [{"code": "panel"}]},
    "component": [
        {"code": {"coding": [{"code": "a"}]}, "valueQuantity": {"value": 5}},
        {"code": {"coding": [{"code": "b"}]}, "valueQuantity": {"value": 10}},
    ],
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a$5", True),
        ("b$10", True),
        ("a$10", False),  # a and 10, but not in one component
        ("b$gt5", True),
        ("a$gt5", False),
        ("c$5", False),
    ],
)
def test_composite_in_one_element(value: str, expected: bool) -> None:
    assert hit(PANEL, ("component-code-value-quantity", value)) is expected


def test_composite_of_the_resource_itself() -> None:
    assert hit(OBSERVATION, ("code-value-quantity", "http://loinc.org|1234-5$5.5||mg"))
    assert not hit(OBSERVATION, ("code-value-quantity", "1234-5$6.5"))


def test_composite_with_an_escaped_dollar() -> None:
    """search.html#escaping: `\\$` is a literal `$` inside one component's value."""
    observation = {**OBSERVATION, "valueString": "a$b"}
    del observation["valueQuantity"]
    assert hit(observation, ("code-value-string", "1234-5$a\\$b"))


def test_composite_of_one_component_needs_no_group() -> None:
    query = SearchQuery(
        ("Patient",),
        ((CompositePredicate("c", (TokenPredicate("gender", None, "female"),)),),),
    )
    assert matches(query, PATIENT)


# --- _id and _lastUpdated (search.html#all) ----------------------------------------------


def test_id() -> None:
    assert hit(PATIENT, ("_id", "p1"))
    assert hit(PATIENT, ("_id", "p2,p1"))
    assert not hit(PATIENT, ("_id", "p2"))
    assert matches(SearchQuery(("Patient",), ((IdPredicate(("p0", "p1")),),)), PATIENT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01", True),
        ("2024-05-01T10:00:00.123456Z", True),  # the instant itself
        ("2024-05-01T10:00:00.123457Z", False),
        ("gt2024-05-01T10:00:00.123456Z", False),
        ("ge2024-05-01T10:00:00.123456Z", True),
        ("sa2024-05-01T10:00:00.123455Z", True),
        ("eb2024-05-01T10:00:00.123457Z", True),
        ("eb2024-05-01T10:00:00.123456Z", False),
        ("lt2024-05-01T12:00:00+02:00", False),  # 10:00 UTC
        ("lt2024-05-01T12:00:01+02:00", True),
        ("ne2024-05", False),
    ],
)
def test_last_updated(value: str, expected: bool) -> None:
    assert hit(PATIENT, ("_lastUpdated", value)) is expected


def test_last_updated_of_a_resource_without_one() -> None:
    assert not hit({"resourceType": "Patient", "id": "p2"}, ("_lastUpdated", "gt2000"))
    assert not hit({"resourceType": "Patient", "id": "p2"}, ("_lastUpdated", "ne2000"))


# --- chains and _has -------------------------------------------------------------------


def resolve(resource_type: str, resource_id: str) -> Resource | None:
    return PATIENT if (resource_type, resource_id) == ("Patient", "p1") else None


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("subject:Patient.name", "ann", True),
        ("subject.name", "ann", True),
        ("subject.name", "bob", False),
        ("subject.gender", "female", True),
        ("subject.gender:not", "female", False),
        ("subject.birthdate", "2000", True),
        ("subject._id", "p1", True),
        ("subject._lastUpdated", "2024", True),
        ("subject:Patient.organization.name", "acme", False),  # no managing organization
        ("subject:Group._id", "p1", False),  # the subject is not a Group
    ],
)
def test_chain(param: str, value: str, expected: bool) -> None:
    assert hit(OBSERVATION, (param, value), resolve=resolve) is expected


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("subject.gender:missing", "true"),
        ("subject.gender:not", "male"),
        ("subject._lastUpdated", "gt2000"),
        ("subject._id", "p9"),
    ],
)
def test_chain_to_a_target_that_does_not_exist(param: str, value: str) -> None:
    dangling = {**OBSERVATION, "subject": {"reference": "Patient/p9"}}
    assert not hit(dangling, (param, value), resolve=resolve)


def test_chain_without_resolve_is_not_supported() -> None:
    with pytest.raises(NotSupported):
        hit(OBSERVATION, ("subject.name", "ann"))
    # Refused whatever the resource, even one the query could not match.
    query = parse_search(("Observation",), [("subject.name", "ann")])
    with pytest.raises(NotSupported):
        matches(query, PATIENT)


def referrers(source_type: str, param: str, target_type: str, target_id: str) -> list[Resource]:
    if (source_type, param, target_type, target_id) == ("Observation", "subject", "Patient", "p1"):
        return [OBSERVATION]
    return []


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("_has:Observation:subject:code", "1234-5", True),
        ("_has:Observation:subject:code", "9999-9", False),
        ("_has:Observation:patient:code", "1234-5", False),  # not by that parameter
        ("_has:Observation:subject:value-quantity", "gt5", True),
    ],
)
def test_has(param: str, value: str, expected: bool) -> None:
    assert hit(PATIENT, (param, value), referrers=referrers) is expected


def test_has_inside_a_chain() -> None:
    assert hit(
        OBSERVATION,
        ("subject:Patient._has:Observation:subject:status", "final"),
        resolve=resolve,
        referrers=referrers,
    )


def test_has_without_referrers_is_not_supported() -> None:
    with pytest.raises(NotSupported):
        hit(PATIENT, ("_has:Observation:subject:code", "1234-5"))
    with pytest.raises(NotSupported):
        hit(OBSERVATION, ("subject:Patient._has:Observation:subject:status", "x"), resolve=resolve)


def test_a_query_is_evaluated_at_the_time_it_is_asked() -> None:
    """`ap` widens by 10% of the distance from now (search.html#prefix)."""
    margin_years = (datetime.now(UTC).year - 2000) / 10
    assert margin_years > 1
    assert hit(PATIENT, ("birthdate", "ap2001"))
