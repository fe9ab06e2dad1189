"""The R4 invariants (conformance-rules.html#constraints, validation.html): each sampled
constraint with a resource that breaks it and one that keeps it; errors refuse a write
(422), warnings (dom-6, best practice; invariants fhirpathpy cannot evaluate) do not."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import FHIRError, Issue, Unprocessable
from fhirserver.resources import codec
from fhirserver.resources.invariants import check_invariants, invariants_of, rewrite
from fhirserver.resources.validate import validate

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "r4" / "examples"
UCUM = "http://unitsofmeasure.org"
XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">'
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}
CODE = {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}
OTHER_CODE = {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}
SUBJECT = {"reference": "Patient/p"}
# Official examples the definitions themselves reject, by file: (constraint key, why).
# Read literally by fhirpathpy, que-7 (`answer is Boolean`, the System type) would also
# reject Questionnaire-bb's `answerBoolean`; the reference validator converts FHIR
# primitives to System types implicitly, and so does our rewrite of the expression.
_EMPTY_DIV = "its narrative div holds only whitespace"
EXPECTED_INVALID_EXAMPLES: dict[str, tuple[str, str]] = {
    "ActivityDefinition-blood-tubes-supply.json": ("txt-2", _EMPTY_DIV),
    "ActivityDefinition-heart-valve-replacement.json": ("txt-2", _EMPTY_DIV),
    "EventDefinition-example.json": ("txt-2", _EMPTY_DIV),
    "Questionnaire-zika-virus-exposure-assessment.json": ("txt-2", f"{_EMPTY_DIV} (in a <pre>)"),
}


def obs(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": CODE, **elements}


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


def contained_patient(contained: dict[str, Any]) -> dict[str, Any]:
    return patient(contained=[contained], link=[{"other": {"reference": "#c"}, "type": "seealso"}])


def med_request(repeat: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": CODE,
        "subject": SUBJECT,
        "dosageInstruction": [{"timing": {"repeat": repeat}}],
    }


def appointment(**elements: Any) -> dict[str, Any]:
    participant = [{"actor": SUBJECT, "status": "accepted"}]
    return {"resourceType": "Appointment", "participant": participant, **elements}


def condition(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": SUBJECT, **elements}


def extension(**value: Any) -> dict[str, Any]:
    return patient(extension=[{"url": "http://example.org/x", **value}])


def composition(section: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Composition",
        "status": "final",
        "type": CODE,
        "date": "2020-01-01",
        "author": [SUBJECT],
        "title": "t",
        "section": [section],
    }


def structure_max(value: str) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition",
        "url": "http://example.org/sd",
        "name": "Sd",
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {"element": [{"path": "Patient.name", "max": value}]},
    }


def questionnaire(item: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "status": "draft", "item": [item]}


def enable_when(**answer: Any) -> dict[str, Any]:
    when = {"question": "q0", "operator": "exists", **answer}
    return questionnaire({"linkId": "q1", "type": "string", "enableWhen": [when]})


ACTIVE = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
    ]
}
RESOLVED = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}
    ]
}
PROBLEM = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
            "code": "problem-list-item",
        }
    ]
}

# key, severity, the element the issue names, a resource breaking it, one keeping it.
CASES: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
    (
        "dom-2",
        "error",
        "Patient",
        contained_patient({"resourceType": "Patient", "id": "c", "contained": [patient(id="d")]}),
        contained_patient(patient(id="c")),
    ),
    (
        "dom-3",
        "error",
        "Patient",
        patient(contained=[patient(id="c")]),
        contained_patient(patient(id="c")),
    ),
    (
        "dom-4",
        "error",
        "Patient",
        contained_patient(patient(id="c", meta={"versionId": "1"})),
        contained_patient(patient(id="c", meta={"tag": [{"code": "t"}]})),
    ),
    (
        "dom-5",
        "error",
        "Patient",
        contained_patient(patient(id="c", meta={"security": [{"code": "R"}]})),
        contained_patient(patient(id="c")),
    ),
    ("dom-6", "warning", "Patient", patient(), patient(text=NARRATIVE)),
    (
        "per-1",
        "error",
        "Encounter.period",
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": {"start": "2020-02-01T10:00:00Z", "end": "2020-01-01T10:00:00Z"},
        },
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "period": {"start": "2020-01-01T10:00:00+02:00", "end": "2020-01-01T09:00:00Z"},
        },
    ),
    (
        "ref-1",
        "error",
        "Observation.subject",
        obs(subject={"reference": "#nowhere"}),
        obs(subject={"reference": "#c"}, contained=[patient(id="c")]),
    ),
    (
        "obs-6",
        "error",
        "Observation",
        obs(valueString="x", dataAbsentReason=CODE),
        obs(dataAbsentReason=CODE),
    ),
    (
        "obs-7",
        "error",
        "Observation",
        obs(valueString="x", component=[{"code": CODE, "valueString": "y"}]),
        obs(valueString="x", component=[{"code": OTHER_CODE, "valueString": "y"}]),
    ),
    (
        "obs-3",
        "error",
        "Observation.referenceRange[0]",
        obs(referenceRange=[{"type": CODE}]),
        obs(referenceRange=[{"text": "normal"}]),
    ),
    (
        "pat-1",
        "error",
        "Patient.contact[0]",
        patient(contact=[{"gender": "male"}]),
        patient(contact=[{"name": {"family": "X"}}]),
    ),
    (
        "qty-3",
        "error",
        "Observation.valueQuantity",
        obs(valueQuantity={"value": 1, "code": "mg"}),
        obs(valueQuantity={"value": 1, "code": "mg", "system": UCUM}),
    ),
    (
        "att-1",
        "error",
        "Patient.photo[1]",
        patient(photo=[{"url": "http://x"}, {"data": "aGVsbG8="}]),
        patient(photo=[{"data": "aGVsbG8=", "contentType": "image/png"}]),
    ),
    (
        "cnt-3",
        "error",
        "Patient.extension[0].valueCount",
        extension(valueCount={"value": 1.5, "system": UCUM, "code": "1"}),
        extension(valueCount={"value": 2, "system": UCUM, "code": "1"}),
    ),
    (
        "age-1",
        "error",
        "Condition.onsetAge",
        condition(onsetAge={"value": -1, "system": UCUM, "code": "a"}),
        condition(onsetAge={"value": 40, "system": UCUM, "code": "a"}),
    ),
    (
        "drt-1",
        "error",
        "Patient.extension[0].valueDuration",
        extension(valueDuration={"value": 1, "code": "min", "system": "http://example.org"}),
        extension(valueDuration={"value": 1, "code": "min", "system": UCUM}),
    ),
    (
        "rng-2",
        "error",
        "Observation.valueRange",
        obs(valueRange={"low": {"value": 10, "unit": "mg"}, "high": {"value": 5, "unit": "mg"}}),
        obs(valueRange={"low": {"value": 5, "unit": "mg"}, "high": {"value": 10, "unit": "mg"}}),
    ),
    (
        "rat-1",
        "error",
        "Observation.valueRatio",
        obs(valueRatio={"numerator": {"value": 1}}),
        obs(valueRatio={"numerator": {"value": 1}, "denominator": {"value": 2}}),
    ),
    (
        "cpt-2",
        "error",
        "Patient.telecom[0]",
        patient(telecom=[{"value": "555"}]),
        patient(telecom=[{"value": "555", "system": "phone"}]),
    ),
    (
        "tim-1",
        "error",
        "MedicationRequest.dosageInstruction[0].timing.repeat",
        med_request({"duration": 1}),
        med_request({"duration": 1, "durationUnit": "h"}),
    ),
    (
        "tim-6",
        "error",
        "MedicationRequest.dosageInstruction[0].timing.repeat",
        med_request({"periodMax": 2, "periodUnit": "d"}),
        med_request({"period": 1, "periodMax": 2, "periodUnit": "d"}),
    ),
    (
        "app-2",
        "error",
        "Appointment",
        appointment(status="proposed", start="2020-01-01T10:00:00Z"),
        appointment(status="proposed"),
    ),
    (
        "app-3",
        "error",
        "Appointment",
        appointment(status="booked"),
        appointment(status="booked", start="2020-01-01T10:00:00Z", end="2020-01-01T11:00:00Z"),
    ),
    (
        "bdl-1",
        "error",
        "Bundle",
        {"resourceType": "Bundle", "type": "collection", "total": 1},
        {"resourceType": "Bundle", "type": "searchset", "total": 1},
    ),
    (
        "bdl-7",
        "error",
        "Bundle",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": patient()},
                {"fullUrl": "urn:uuid:1", "resource": patient()},
            ],
        },
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": patient()},
                {"fullUrl": "urn:uuid:2", "resource": patient()},
            ],
        },
    ),
    (
        "con-4",
        "error",
        "Condition",
        condition(clinicalStatus=ACTIVE, abatementDateTime="2020-01-01"),
        condition(clinicalStatus=RESOLVED, abatementDateTime="2020-01-01"),
    ),
    (
        "con-3",
        "warning",
        "Condition",
        condition(category=[PROBLEM]),
        condition(category=[PROBLEM], clinicalStatus=ACTIVE),
    ),
    (
        "cmp-1",
        "error",
        "Composition.section[0]",
        composition({"title": "empty"}),
        composition({"title": "s", "text": NARRATIVE}),
    ),
    (
        "exp-1",
        "error",
        "Patient.extension[0].valueExpression",
        extension(valueExpression={"language": "text/cql"}),
        extension(valueExpression={"language": "text/cql", "expression": "true"}),
    ),
    (
        "org-1",
        "error",
        "Organization",
        {"resourceType": "Organization", "active": True},
        {"resourceType": "Organization", "name": "Acme"},
    ),
    (
        "inv-1",
        "error",
        "Task",
        {
            "resourceType": "Task",
            "status": "draft",
            "intent": "order",
            "authoredOn": "2020-02-01",
            "lastModified": "2020-01-01",
        },
        {
            "resourceType": "Task",
            "status": "draft",
            "intent": "order",
            "authoredOn": "2020-01-01",
            "lastModified": "2020-02-01",
        },
    ),
    (
        "inv-1",
        "error",
        "Parameters.parameter[0]",
        {"resourceType": "Parameters", "parameter": [{"name": "a"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "a", "valueString": "x"}]},
    ),
    (
        "que-1",
        "error",
        "Questionnaire.item[0]",
        questionnaire({"linkId": "g", "type": "group"}),
        questionnaire(
            {"linkId": "g", "type": "group", "item": [{"linkId": "s", "type": "string"}]}
        ),
    ),
    (
        "que-7",
        "error",
        "Questionnaire.item[0].enableWhen[0]",
        enable_when(answerString="x"),
        enable_when(answerBoolean=True),
    ),
    (
        "eld-3",
        "error",
        "StructureDefinition.differential.element[0].max",
        structure_max("-1"),
        structure_max("1"),
    ),
    (
        "ras-2",
        "error",
        "RiskAssessment.prediction[0]",
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": SUBJECT,
            "prediction": [{"probabilityDecimal": 150}],
        },
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": SUBJECT,
            "prediction": [{"probabilityDecimal": 50}],
        },
    ),
    (
        "txt-1",
        "error",
        "Patient.text.div",
        patient(text={**NARRATIVE, "div": f"{XHTML}<script>alert(1)</script>x</div>"}),
        patient(text={**NARRATIVE, "div": f"{XHTML}<p><b>x</b><img src='#a'/></p></div>"}),
    ),
    (
        "txt-1",
        "error",
        "Patient.text.div",
        patient(text={**NARRATIVE, "div": f"{XHTML}<p onclick='steal()'>x</p></div>"}),
        patient(text={**NARRATIVE, "div": f"{XHTML}<p style='color:red'>x</p></div>"}),
    ),
    (
        "txt-2",
        "error",
        "Patient.text.div",
        patient(text={**NARRATIVE, "div": f"{XHTML}\n  <p> </p></div>"}),
        patient(text={**NARRATIVE, "div": f"{XHTML}<img src='#a'/></div>"}),
    ),
    (
        "ele-1",
        "error",
        "Patient.name[0]",
        patient(name=[{"id": "n"}]),
        patient(name=[{"id": "n", "text": "x"}]),
    ),
    (
        "ext-1",
        "error",
        "Patient.extension[0]",
        patient(extension=[{"url": "http://example.org/x"}]),
        patient(extension=[{"url": "http://example.org/x", "valueString": "y"}]),
    ),
]


def keyed(issues: list[Issue], key: str) -> list[Issue]:
    return [issue for issue in issues if f"Constraint {key} " in issue.diagnostics]


def case_id(case: tuple[str, str, str, dict[str, Any], dict[str, Any]]) -> str:
    return f"{case[0]}:{case[2]}"


@pytest.mark.parametrize(
    ("key", "severity", "where", "bad", "good"), CASES, ids=map(case_id, CASES)
)
def test_invariant_broken_and_kept(
    key: str, severity: str, where: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    broken = keyed(check_invariants(bad["resourceType"], bad), key)
    assert [(i.severity, i.expression) for i in broken] == [(severity, where)]
    assert broken[0].code == "invariant"
    assert not keyed(check_invariants(good["resourceType"], good), key)


ERROR_CASES = [case for case in CASES if case[1] == "error"]


@pytest.mark.parametrize(
    ("key", "severity", "where", "bad", "good"), ERROR_CASES, ids=map(case_id, ERROR_CASES)
)
def test_a_broken_error_invariant_is_422(
    key: str, severity: str, where: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    with pytest.raises(Unprocessable) as caught:
        validate(bad)
    issue = keyed(caught.value.issues, key)[0]
    assert issue.expression == where and key in str(caught.value)


def test_warnings_do_not_refuse() -> None:
    assert validate(patient()) == "Patient"
    assert validate(condition()) == "Condition"


def test_unsupported_invariants_are_warnings() -> None:
    """ctm-1 calls resolve(), which fhirpathpy lacks (and a server would need a read)."""
    participant = {"member": SUBJECT, "onBehalfOf": {"reference": "Organization/o"}}
    team = {"resourceType": "CareTeam", "participant": [participant]}
    issues = check_invariants("CareTeam", team)
    assert [(i.severity, i.expression) for i in issues] == [
        ("warning", "CareTeam"),
        ("warning", "CareTeam.participant[0]"),
    ]
    assert "ctm-1 not checked: fhirpathpy lacks resolve()" in issues[1].diagnostics
    assert validate(team) == "CareTeam"


def test_the_constraint_text_is_in_the_issue() -> None:
    issue = keyed(check_invariants("Patient", patient(contact=[{"gender": "male"}])), "pat-1")[0]
    assert "SHALL at least contain a contact's details or a reference to an organization" in (
        issue.diagnostics
    )


def test_data_type_invariants_apply_at_any_depth() -> None:
    deep = patient(
        contained=[
            {
                "resourceType": "Organization",
                "id": "c",
                "name": "x",
                "contact": [{"telecom": [{"value": "555"}]}],
            }
        ],
        managingOrganization={"reference": "#c"},
    )
    issues = keyed(check_invariants("Patient", deep), "cpt-2")
    assert [i.expression for i in issues] == ["Patient.contained[0].contact[0].telecom[0]"]


def test_an_expression_is_compiled_once_per_type() -> None:
    assert invariants_of("Period") is invariants_of("Period")


def test_rewrites_for_fhirpathpy() -> None:
    assert rewrite("x.as(canonical) | y is Boolean") == "x.ofType(canonical) | y is boolean"


def example_names() -> list[str]:
    return sorted(path.name for path in EXAMPLES.glob("*.json"))


def test_the_official_examples_keep_the_invariants() -> None:
    refused = {}
    for name in example_names():
        resource = codec.loads((EXAMPLES / name).read_bytes())
        errors = [
            i for i in check_invariants(resource["resourceType"], resource) if i.severity == "error"
        ]
        if errors:
            refused[name] = errors[0].diagnostics.split(" ")[1]
    assert refused == {name: key for name, (key, _) in EXPECTED_INVALID_EXAMPLES.items()}


def mutate(value: Any, rng: random.Random) -> Any:
    """One random change somewhere in a resource: a dropped, emptied, retyped or
    duplicated element, as a careless client might send."""
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        if key == "resourceType":
            return value
        choice = rng.random()
        copy = dict(value)
        if choice < 0.2:
            del copy[key]
        elif choice < 0.35:
            copy[key] = rng.choice([{}, [], "", None, 0, True, {"id": "x"}, [None], "#x"])
        elif choice < 0.45:
            copy[f"{key}Extra"] = copy[key]
        else:
            copy[key] = mutate(value[key], rng)
        return copy
    if isinstance(value, list) and value:
        index = rng.randrange(len(value))
        if rng.random() < 0.2:
            return [*value, value[index]]
        return [*value[:index], mutate(value[index], rng), *value[index + 1 :]]
    if isinstance(value, str):
        return rng.choice(["", "#c", "2020-13-45", value[::-1], "9999", "<div/>"])
    return rng.choice([-1, 1.5, "x", None, value])


def test_mutated_examples_raise_only_fhir_errors() -> None:
    rng = random.Random(13)
    names = example_names()
    for _ in range(300):
        resource = codec.loads((EXAMPLES / rng.choice(names)).read_bytes())
        for _ in range(rng.randint(1, 4)):
            resource = mutate(resource, rng)
        with contextlib.suppress(FHIRError):
            validate(resource)
