"""The virtual-service extension (R5 datatypes.html#VirtualServiceDetail carried in R4 as a
complex extension, R4 extensibility.html), the channel codes, references (R4
references.html) and the telehealth Consent (R4 consent.html) as `require_consent` reads it."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirserver.errors import Unprocessable
from fhirserver.resources.validate import validate
from fhirserver.telehealth.virtual_service import (
    CHANNEL_TYPE_SYSTEM,
    CONSENT_CATEGORY,
    HL7_CHANNEL_TYPE_SYSTEM,
    VIRTUAL_SERVICE_URL,
    VR_CLASS,
    Coding,
    VirtualService,
    channel_type,
    consent_permits_visit,
    is_virtual,
    patient_reference,
    provider_name,
    virtual_service,
    with_virtual_service,
)

README = Path(__file__).resolve().parents[2] / "extensions" / "README.md"
OTHER = {"url": "http://example.org/fhir/StructureDefinition/other", "valueString": "x"}
FULL = VirtualService(
    channel_type=Coding(CHANNEL_TYPE_SYSTEM, "livekit"),
    address="https://video.example/room-1",
    additional_info=("https://video.example/help", "https://video.example/dial-in"),
    max_participants=3,
    session_key="room-1",
    meeting_code="K7PX3MWQ9C",
)


def appointment(*extensions: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": "booked",
        "start": "2026-11-21T10:00:00Z",
        "end": "2026-11-21T10:30:00Z",
        "participant": [
            {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"},
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
        ],
    }
    if extensions:
        resource["extension"] = list(extensions)
    return resource


def ours(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"url": VIRTUAL_SERVICE_URL, "extension": list(parts)}


def test_no_extension_is_not_virtual() -> None:
    plain = appointment(OTHER)
    assert virtual_service(plain) is None
    assert not is_virtual(plain)
    assert not is_virtual(None)


def test_reads_every_sub_extension() -> None:
    resource = appointment(OTHER, FULL.to_extension())
    assert is_virtual(resource)
    assert virtual_service(resource) == FULL


def test_the_extension_is_valid_r4_on_an_appointment() -> None:
    assert validate(appointment(FULL.to_extension())) == "Appointment"


def test_sub_extensions_follow_the_structure_definition_order() -> None:
    names = [part["url"] for part in FULL.to_extension()["extension"]]
    assert names == [
        "channelType",
        "address",
        "additionalInfo",
        "additionalInfo",
        "maxParticipants",
        "sessionKey",
        "meetingCode",
    ]


def test_an_empty_service_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="ext-1"):
        VirtualService().to_extension()


def test_with_virtual_service_replaces_ours_in_place_and_keeps_others() -> None:
    second = {"url": "http://example.org/fhir/StructureDefinition/second", "valueInteger": 2}
    old = ours({"url": "channelType", "valueCoding": channel_type("jitsi").to_json()})
    resource = appointment(OTHER, old, second)
    before = copy.deepcopy(resource)
    updated = with_virtual_service(resource, FULL)
    assert resource == before
    assert updated["extension"] == [OTHER, FULL.to_extension(), second]
    assert virtual_service(updated) == FULL


def test_with_virtual_service_appends_when_absent() -> None:
    updated = with_virtual_service(appointment(OTHER), FULL)
    assert updated["extension"] == [OTHER, FULL.to_extension()]


def test_with_virtual_service_none_removes_ours_only() -> None:
    assert with_virtual_service(appointment(OTHER, FULL.to_extension()), None)["extension"] == [
        OTHER
    ]
    assert "extension" not in with_virtual_service(appointment(FULL.to_extension()), None)


def test_absolute_sub_extensions_are_other_extensions() -> None:
    foreign = {"url": "http://example.org/fhir/StructureDefinition/x", "valueString": "y"}
    resource = appointment(ours({"url": "maxParticipants", "valuePositiveInt": 2}, foreign))
    assert virtual_service(resource) == VirtualService(max_participants=2)


@pytest.mark.parametrize(
    ("extensions", "expression"),
    [
        (
            [OTHER, ours({"url": "sessionKey", "valueString": "a"}), FULL.to_extension()],
            "Appointment.extension[2]",
        ),
        ([{**FULL.to_extension(), "valueString": "x"}], "Appointment.extension[0]"),
        ([ours()], "Appointment.extension[0]"),
        ([{"url": VIRTUAL_SERVICE_URL}], "Appointment.extension[0]"),
        (
            [ours({"url": "sessionKey", "valueString": "a"}, {"url": "meetingcode"})],
            "Appointment.extension[0].extension[1]",
        ),
        (
            [ours({"url": "maxParticipants", "valuePositiveInt": 2}, {"valueString": "a"})],
            "Appointment.extension[0].extension[1]",
        ),
        (
            [
                ours(
                    {"url": "channelType", "valueCoding": {"code": "jitsi"}},
                    {"url": "channelType", "valueCoding": {"code": "livekit"}},
                )
            ],
            "Appointment.extension[0].extension[1]",
        ),
        (
            [ours({"url": "address", "valueString": "https://x"})],
            "Appointment.extension[0].extension[0]",
        ),
        (
            [ours({"url": "channelType", "valueCoding": {"system": CHANNEL_TYPE_SYSTEM}})],
            "Appointment.extension[0].extension[0].valueCoding",
        ),
        (
            [ours({"url": "maxParticipants", "valuePositiveInt": 0})],
            "Appointment.extension[0].extension[0].valuePositiveInt",
        ),
        (
            [ours({"url": "maxParticipants", "valuePositiveInt": True})],
            "Appointment.extension[0].extension[0].valuePositiveInt",
        ),
        (
            [ours({"url": "meetingCode", "valueString": ""})],
            "Appointment.extension[0].extension[0].valueString",
        ),
    ],
    ids=[
        "twice",
        "value-on-complex",
        "empty-list",
        "no-sub-extensions",
        "unknown-name",
        "no-url",
        "channelType-twice",
        "wrong-value-type",
        "coding-without-code",
        "not-positive",
        "boolean-is-no-int",
        "empty-string",
    ],
)
def test_malformed_extension_is_422_naming_the_element(
    extensions: list[dict[str, Any]], expression: str
) -> None:
    with pytest.raises(Unprocessable) as caught:
        virtual_service(appointment(*extensions))
    assert caught.value.status == 422
    assert [issue.expression for issue in caught.value.issues] == [expression]


def test_additional_info_repeats() -> None:
    resource = appointment(
        ours(
            {"url": "additionalInfo", "valueUrl": "https://a"},
            {"url": "additionalInfo", "valueUrl": "https://b"},
        )
    )
    service = virtual_service(resource)
    assert service is not None and service.additional_info == ("https://a", "https://b")


@pytest.mark.parametrize(
    ("coding", "name"),
    [
        (Coding(CHANNEL_TYPE_SYSTEM, "jitsi"), "jitsi"),
        (Coding(CHANNEL_TYPE_SYSTEM, "livekit"), "livekit"),
        (Coding(CHANNEL_TYPE_SYSTEM, "100ms"), "100ms"),
        (Coding(HL7_CHANNEL_TYPE_SYSTEM, "zoom"), "zoom"),
        (Coding(HL7_CHANNEL_TYPE_SYSTEM, "jitsi"), None),
        (Coding(CHANNEL_TYPE_SYSTEM, "zoom"), None),
        (Coding(None, "jitsi"), None),
        (Coding("http://example.org/video", "jitsi"), None),
    ],
)
def test_provider_name_from_channel_type(coding: Coding, name: str | None) -> None:
    assert provider_name(VirtualService(channel_type=coding)) == name


def test_provider_name_without_channel() -> None:
    assert provider_name(None) is None
    assert provider_name(VirtualService(max_participants=2)) is None


def test_channel_type_codings() -> None:
    assert channel_type("100ms") == Coding(CHANNEL_TYPE_SYSTEM, "100ms")
    assert channel_type("ms-teams") == Coding(HL7_CHANNEL_TYPE_SYSTEM, "ms-teams")
    with pytest.raises(ValueError):
        channel_type("webex")


def test_vr_class_is_the_v3_act_code() -> None:
    assert VR_CLASS.to_json() == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        "code": "VR",
        "display": "virtual",
    }
    assert VR_CLASS.matches({"system": VR_CLASS.system, "code": "VR"})
    assert not VR_CLASS.matches({"system": VR_CLASS.system, "code": "AMB"})


def test_patient_reference_is_the_patient_participant() -> None:
    assert patient_reference(appointment()) == "Patient/p1"
    assert patient_reference({"resourceType": "Appointment", "participant": []}) is None


# --- Consent -------------------------------------------------------------------------

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def readme_consent() -> dict[str, Any]:
    section = README.read_text().split("## Consent", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    consent: dict[str, Any] = json.loads(block.group(1))
    return consent


def test_the_documented_consent_shape_is_accepted_and_valid_r4() -> None:
    consent = readme_consent()
    assert validate(consent) == "Consent"
    assert consent_permits_visit(consent, "Patient/123", AT)


def test_a_minimal_consent_without_provision_is_accepted() -> None:
    consent = readme_consent()
    del consent["provision"]
    assert consent_permits_visit(consent, "Patient/123", AT)


def _set(path: str, value: Any) -> Any:
    def change(consent: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = consent
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _set("resourceType", "Contract"),
        _set("status", "inactive"),
        _set("status", "proposed"),
        _set("scope", {"coding": [{**CONSENT_CATEGORY.to_json(), "code": "research"}]}),
        _set(
            "scope",
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "adr"}
                ]
            },
        ),
        _set("category", [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]),
        _set("patient", {"reference": "Patient/999"}),
        _set("policyRule", None),
        _set(
            "policyRule",
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}
                ]
            },
        ),
        _set("provision.type", "deny"),
        _set("provision.period", {"start": "2026-11-22"}),
        _set("provision.period", {"end": "2026-11-20"}),
        _set("provision.period", {"start": "2026-01-01", "end": "2026-11-21T09:59:59Z"}),
        _set("provision.period", {"start": "not a date"}),
    ],
    ids=[
        "not-consent",
        "inactive",
        "proposed",
        "scope-wrong-system",
        "scope-adr",
        "category-loinc-only",
        "other-patient",
        "no-policy",
        "opt-out",
        "deny",
        "starts-later",
        "ended-day-before",
        "ended-before-visit",
        "bad-date",
    ],
)
def test_consent_that_does_not_cover_the_visit(change: Any) -> None:
    consent = readme_consent()
    change(consent)
    assert not consent_permits_visit(consent, "Patient/123", AT)


def test_consent_extras_that_still_cover_the_visit() -> None:
    consent = readme_consent()
    consent["category"].insert(0, {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]})
    consent["provision"]["type"] = "permit"
    consent["provision"]["period"] = {"start": "2026-11-21", "end": "2026-11-21"}
    consent["patient"] = {"reference": "https://fhir.example/r4/Patient/123"}
    assert consent_permits_visit(consent, "Patient/123", AT)
    consent.pop("policyRule")
    consent["policy"] = [{"uri": "https://clinic.example/policies/telehealth"}]
    assert consent_permits_visit(consent, "Patient/123", AT)
