"""The structure walk is the whole structural validation (R4 json.html, datatypes.html,
elementdefinition.html `min`, formats.html#choice): the R4B pydantic models
(fhir.resources) are no longer run, because they reject nothing the walk accepts.

Shown here on the 717 official R4 examples and mutations of each (elements dropped,
primitives given wrong values, a second form of a choice element): whatever the R4B
model rejects, `validate` rejects too, with the same status (400 for a malformed
element, 422 for a missing required one). Where the walk is stricter (R4 elements the
R4B models lack or reshaped, `fhir_comments`, empty strings), it is R4 that says so.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from fhirserver.errors import BadRequest, FHIRError, Unprocessable
from fhirserver.resources.definitions import r4b_model
from fhirserver.resources.structure import is_sound, report_structure
from fhirserver.resources.validate import validate

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "r4" / "examples"
# Values of the wrong format for most primitive types (and right for some).
WRONG_TEXTS = ("", " x", "a  b", "2020-13-01", "2021-02-30", "2020-01-01T10:00:00", "x\n", "@@")
WRONG_NUMBERS = (0, -1, 2**31, 1.5)
CHOICE_FORMS = (("Boolean", True), ("String", "x"), ("Reference", {"reference": "Patient/1"}))
CHOICES = ("value", "effective", "onset", "deceased", "multipleBirth", "occurrence", "timing")


def model_verdict(resource: dict[str, Any]) -> int | None:
    """The R4B model's verdict: None (accepted), 400 or 422 (a missing element only)."""
    model = r4b_model(resource["resourceType"])
    assert model is not None
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        missing = all("missing" in error["type"] for error in exc.errors())
        return 422 if missing else 400
    except (ValueError, TypeError, KeyError, AttributeError):
        return 400
    return None


def verdict(resource: dict[str, Any]) -> int | None:
    try:
        validate(resource)
    except Unprocessable:
        return 422
    except BadRequest:
        return 400
    except FHIRError as exc:
        return exc.status
    return None


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        if key == "resourceType":
            continue
        if isinstance(child, dict | list):
            yield from _leaves(child, (*path, key))
        else:
            yield (*path, key), child


def _objects(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        yield path, node
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        if isinstance(child, dict | list):
            yield from _objects(child, (*path, key))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        document = document[step]
    return document


def mutations(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each object's elements dropped one at a time, leaves set to wrong values, and a
    second form added beside a choice element's (bounded per example)."""
    objects = list(_objects(resource))[:10]
    for path, node in objects:
        for key in list(node)[:5]:
            # An object emptied is malformed (400), whatever it lacks.
            if key != "resourceType" and (len(node) > 1 or not path):
                changed = copy.deepcopy(resource)
                del _at(changed, path)[key]
                yield changed
    for path, value in list(_leaves(resource))[:5]:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        for wrong in WRONG_NUMBERS if numeric else WRONG_TEXTS:
            changed = copy.deepcopy(resource)
            _at(changed, path[:-1])[path[-1]] = wrong
            yield changed
    for path, node in objects:
        for key in list(node):
            name = next((c for c in CHOICES if key.startswith(c) and key != c), None)
            for suffix, value in CHOICE_FORMS if name else ():
                if key != name + suffix:
                    changed = copy.deepcopy(resource)
                    _at(changed, path)[name + suffix] = value  # type: ignore[operator]
                    yield changed


def identity(resource: dict[str, Any]) -> tuple[str, str | None]:
    return resource["resourceType"], resource.get("id")


def examples() -> list[dict[str, Any]]:
    found = [orjson.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))]
    return [resource for resource in found if r4b_model(resource["resourceType"]) is not None]


# Official examples R4 itself calls invalid: a narrative without text (txt-2), nested
# Questionnaire items without their required linkId. Rejected before this walk, too.
INVALID_EXAMPLES = {
    ("ActivityDefinition", "blood-tubes-supply"),
    ("ActivityDefinition", "heart-valve-replacement"),
    ("EventDefinition", "example"),
    ("Questionnaire", "qs1"),
    ("Questionnaire", "zika-virus-exposure-assessment"),
}


def test_what_the_r4b_model_rejects_validate_rejects() -> None:
    """The statuses agree too, except that the model calls a missing required primitive
    (Observation.status) a 400 and validate a 422, as R4 http.html#update asks of a
    resource that parses but breaks a rule."""
    resources = examples()
    assert len(resources) > 600
    checked = rejected = 0
    accepted, differ = [], []
    for resource in resources:
        for candidate in (resource, *mutations(resource)):
            checked += 1
            expected = model_verdict(candidate)
            if expected is None:
                continue
            rejected += 1
            got = verdict(candidate)
            if got is None:
                accepted.append((candidate["resourceType"], candidate.get("id")))
            elif expected == 422 and got != 422 and identity(resource) not in INVALID_EXAMPLES:
                differ.append((candidate["resourceType"], candidate.get("id"), got))
    assert accepted == [], f"{len(accepted)} of {rejected} rejections accepted: {accepted[:5]}"
    assert differ == [], f"missing elements answered otherwise than 422: {differ[:5]}"
    assert checked > 20_000 and rejected > 5_000


def test_the_official_examples_are_accepted_as_before() -> None:
    refused = {identity(r) for r in examples() if verdict(r) is not None}
    assert refused == INVALID_EXAMPLES


OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}


@pytest.mark.parametrize(
    ("change", "status", "expression"),
    [
        pytest.param({"status": None}, 422, "Observation.status", id="required primitive"),
        pytest.param({"code": None}, 422, "Observation.code", id="required complex"),
        pytest.param(
            {"component": [{"valueString": "x"}]},
            422,
            "Observation.component[0].code",
            id="required in a backbone",
        ),
        pytest.param(
            {"valueString": "x", "valueBoolean": True},
            400,
            "Observation.value[x]",
            id="two forms of a choice",
        ),
        pytest.param(
            {"valueString": "x", "_valueBoolean": {"id": "a"}},
            400,
            "Observation.value[x]",
            id="a form's twin",
        ),
        pytest.param(
            {"effectiveDateTime": "2021-02-30"},
            400,
            "Observation.effectiveDateTime",
            id="no such day",
        ),
        pytest.param(
            {"effectiveDateTime": "2021-02-01T10:00"},
            400,
            "Observation.effectiveDateTime",
            id="no zone",
        ),
        pytest.param(
            {"issued": "2021-02-01"}, 400, "Observation.issued", id="instant without time"
        ),
        pytest.param(
            {"status": "final "}, 400, "Observation.status", id="code with a trailing space"
        ),
        pytest.param(
            {"valueInteger": 2**31}, 400, "Observation.valueInteger", id="integer past 32 bits"
        ),
        pytest.param({"id": "a" * 65}, 400, "Observation.id", id="id too long"),
        pytest.param({"valueString": ""}, 400, "Observation.valueString", id="empty string"),
        pytest.param(
            {"referenceRange": [{"low": {"value": 1}, "text": "x", "age": {"low": {"value": -1}}}]},
            None,
            None,
            id="a decimal may be negative",
        ),
    ],
)
def test_the_walk_checks_formats_cardinality_and_choices(
    change: dict[str, Any], status: int | None, expression: str | None
) -> None:
    resource = {k: v for k, v in (OBSERVATION | change).items() if v is not None}
    got = verdict(resource)
    assert got == status
    if expression is not None:
        with pytest.raises(FHIRError) as caught:
            validate(resource)
        assert any(issue.expression == expression for issue in caught.value.issues)


@pytest.mark.parametrize(
    ("element", "value", "accepted"),
    [
        ("valuePositiveInt", 0, False),
        ("valuePositiveInt", 1, True),
        ("valueUnsignedInt", -1, False),
        ("valueUnsignedInt", 0, True),
        ("valueBase64Binary", "aGVsbG8=", True),
        ("valueBase64Binary", "aGVsbG8", False),
        ("valueBase64Binary", "not base64!", False),
        ("valueUuid", "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", True),
        ("valueUuid", "c757873d-ec9a-4326-a141-556f43239520", False),
        ("valueOid", "urn:oid:1.2.3", True),
        ("valueTime", "25:00:00", False),
        ("valueDate", "2024", True),
        ("valueDate", "2024-02-29", True),
        ("valueDate", "2023-02-29", False),
    ],
)
def test_primitive_formats(element: str, value: Any, accepted: bool) -> None:
    extension = {"url": "http://example.org/x", element: value}
    resource = {"resourceType": "Patient", "extension": [extension]}
    assert (verdict(resource) is None) is accepted


def test_a_required_primitive_may_be_an_extension_alone() -> None:
    """json.html#primitive: `_status` with an extension stands for an absent value."""
    absent = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }
    resource = {k: v for k, v in OBSERVATION.items() if k != "status"} | {"_status": absent}
    assert verdict(resource) is None


def test_the_fast_verdict_agrees_with_the_reporting_walk() -> None:
    """`check_structure` trusts the fast verdict alone for a sound resource: it may say
    True only where the reporting walk finds no issue and asks for no schema check, and
    it must say True for the sound examples, or it saves nothing."""
    wrongly_sound, checked = [], 0
    sound_missed = []
    for resource in examples():
        for candidate in (resource, *mutations(resource)):
            checked += 1
            kind = candidate["resourceType"]
            report = report_structure(kind, candidate)
            clean = not report.issues and not report.needs_schema
            if is_sound(kind, candidate) and not clean:
                wrongly_sound.append(identity(candidate))
            elif candidate is resource and clean and not is_sound(kind, candidate):
                sound_missed.append(identity(candidate))
    assert wrongly_sound == [], f"{len(wrongly_sound)} called sound: {wrongly_sound[:5]}"
    assert sound_missed == [], f"{len(sound_missed)} sound examples missed: {sound_missed[:5]}"
    assert checked > 20_000
