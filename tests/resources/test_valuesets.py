"""The R4 core ValueSets expanded from the definitions' CodeSystems (R4
valueset.html#compose: include / exclude, concept lists, filters is-a, descendent-of,
is-not-a, imported ValueSets) and the CodeSystem hierarchies (codesystem.html#hierarchy);
ValueSets drawn from terminologies not in the definitions are not expandable
(terminologies.html#binding: such bindings cannot be judged here)."""

from __future__ import annotations

from fhirserver.resources.valuesets import descendants, expand, not_expandable, parents

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"


def _codes(url: str) -> set[tuple[str, str]]:
    expansion = expand(url)
    assert expansion is not None, url
    return set(expansion.codings)


def test_a_whole_codesystem_include() -> None:
    gender = "http://hl7.org/fhir/administrative-gender"
    assert _codes("http://hl7.org/fhir/ValueSet/administrative-gender") == {
        (gender, "male"),
        (gender, "female"),
        (gender, "other"),
        (gender, "unknown"),
    }


def test_the_version_of_a_canonical_is_ignored() -> None:
    assert expand("http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1") == expand(
        "http://hl7.org/fhir/ValueSet/administrative-gender"
    )


def test_an_is_a_filter_with_its_root_excluded() -> None:
    codes = _codes("http://terminology.hl7.org/ValueSet/v3-ActEncounterCode")
    assert (ACT_CODE, "AMB") in codes and (ACT_CODE, "IMP") in codes
    assert (ACT_CODE, "_ActEncounterCode") not in codes


def test_a_descendent_of_filter_leaves_the_root_out() -> None:
    mood = "http://terminology.hl7.org/CodeSystem/v3-ActMood"
    codes = _codes("http://hl7.org/fhir/ValueSet/inactive")
    assert (mood, "_ActMoodPredicate") not in codes and (mood, "GOL") in codes


def test_an_is_not_a_filter() -> None:
    codes = {code for _, code in _codes("http://hl7.org/fhir/ValueSet/patient-contactrelationship")}
    assert "O" not in codes and {"C", "E", "N"} <= codes


def test_imported_valuesets_and_listed_concepts() -> None:
    codes = _codes("http://hl7.org/fhir/ValueSet/yesnodontknow")
    assert codes == {
        ("http://terminology.hl7.org/CodeSystem/v2-0136", "Y"),
        ("http://terminology.hl7.org/CodeSystem/v2-0136", "N"),
        ("http://terminology.hl7.org/CodeSystem/data-absent-reason", "asked-unknown"),
    }


def test_codes_alone_serve_code_elements() -> None:
    expansion = expand("http://hl7.org/fhir/ValueSet/observation-status")
    assert expansion is not None
    assert expansion.has_code("final") and not expansion.has_code("done")


def test_valuesets_from_external_terminologies_are_not_expandable() -> None:
    reasons = not_expandable()
    snomed = "http://hl7.org/fhir/ValueSet/additional-instruction-codes"
    assert expand(snomed) is None and "snomed.info/sct" in reasons[snomed]
    for url in ("mimetypes", "ucum-units", "currencies"):
        assert expand(f"http://hl7.org/fhir/ValueSet/{url}") is None
    assert expand("http://example.org/ValueSet/unknown") is None


def test_codesystem_hierarchy() -> None:
    assert parents(ACT_CODE, "AMB") == ("_ActEncounterCode",)
    below = descendants(ACT_CODE, "_ActEncounterCode")
    assert {"AMB", "EMER", "IMP"} <= below and "_ActEncounterCode" not in below
    assert descendants(V2_0131, "C") == frozenset()
    assert descendants("http://example.org/none", "x") == frozenset()
