"""The conformance resources in extensions/ (R4 structuredefinition.html, extensibility.html,
codesystem.html, valueset.html, operationdefinition.html): valid R4, canonical URLs on our
base, and agreeing with the code that uses them and with extensions/README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.operationdefinition import OperationDefinition
from fhir.resources.R4B.structuredefinition import StructureDefinition

from fhirserver.conformance import data_dir, load_resources
from fhirserver.resources.schema import r4_schema
from fhirserver.resources.validate import validate
from fhirserver.telehealth import virtual_service

FOLDER = data_dir("extensions")
FILES = sorted(FOLDER.glob("*.json"))
README = FOLDER / "README.md"
TOPIC_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
CANONICAL_KEYS = {"url", "valueSet", "system", "fixedUri"}


def load(name: str) -> dict[str, Any]:
    resource: dict[str, Any] = json.loads((FOLDER / name).read_text())
    return resource


def test_the_folder_holds_our_resources() -> None:
    assert [path.name for path in FILES] == [
        "Basic-SubscriptionTopic-appointment-booked.json",
        "Basic-SubscriptionTopic-no-show.json",
        "Basic-SubscriptionTopic-patient-waiting.json",
        "Basic-SubscriptionTopic-visit-ended.json",
        "Basic-SubscriptionTopic-visit-started.json",
        "CodeSystem-call-quality.json",
        "CodeSystem-consent-category.json",
        "CodeSystem-telehealth-event.json",
        "CodeSystem-virtual-service-type.json",
        "OperationDefinition-Appointment-start-virtual-visit.json",
        "OperationDefinition-Patient-everything.json",
        "OperationDefinition-end-virtual-visit.json",
        "StructureDefinition-virtual-service.json",
        "ValueSet-virtual-service-type.json",
    ]
    assert len(list(load_resources("extensions"))) == len(FILES)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_valid_r4(path: Path) -> None:
    resource = json.loads(path.read_text())
    model = get_fhir_model_class(resource["resourceType"])
    assert model.model_validate(resource).id == resource["id"]
    assert validate(resource) == resource["resourceType"]
    errors = list(jsonschema.Draft6Validator(r4_schema()).iter_errors(resource))
    assert errors == []


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_canonical_url_is_on_our_base(path: Path) -> None:
    resource = json.loads(path.read_text())
    kind, rid = resource["resourceType"], resource["id"]
    assert path.name == f"{kind}-{rid}.json"
    if kind == "Basic":  # a SubscriptionTopic in R4 (tests/subscriptions/test_topics.py)
        url = TOPIC_EXTENSION + "url"
        topic_url = next(e["valueUri"] for e in resource["extension"] if e["url"] == url)
        topic_id = rid.removeprefix("SubscriptionTopic-")
        assert topic_url == f"{virtual_service.BASE_URL}/SubscriptionTopic/{topic_id}"
        return
    assert resource["url"] == f"{virtual_service.BASE_URL}/{kind}/{rid}"
    assert resource["status"] == "active"


def _canonicals(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            if key in CANONICAL_KEYS and isinstance(child, str) and "fhirserver" in child:
                found.append(child)
            found.extend(_canonicals(child))
    elif isinstance(value, list):
        for child in value:
            found.extend(_canonicals(child))
    return found


def test_every_canonical_of_ours_resolves_inside_the_folder() -> None:
    urls = {resource.get("url") for resource in load_resources("extensions")}
    mentioned = {url for path in FILES for url in _canonicals(json.loads(path.read_text()))}
    assert mentioned, "no canonical found: the walk is broken"
    assert all(url.startswith(virtual_service.BASE_URL + "/") for url in mentioned)
    assert mentioned <= urls


# --- The virtual-service extension ----------------------------------------------------------

SUB_EXTENSIONS = {
    "channelType": ("Coding", "1"),
    "address": ("url", "1"),
    "additionalInfo": ("url", "*"),
    "maxParticipants": ("positiveInt", "1"),
    "sessionKey": ("string", "1"),
    "meetingCode": ("string", "1"),
}


def elements() -> dict[str, dict[str, Any]]:
    definition = load("StructureDefinition-virtual-service.json")
    return {element["id"]: element for element in definition["differential"]["element"]}


def test_extension_definition_header() -> None:
    definition = load("StructureDefinition-virtual-service.json")
    assert StructureDefinition.model_validate(definition).kind == "complex-type"
    assert definition["url"] == virtual_service.VIRTUAL_SERVICE_URL
    assert definition["fhirVersion"] == "4.0.1"
    assert definition["type"] == "Extension" and definition["derivation"] == "constraint"
    assert definition["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Extension"
    assert {c["expression"] for c in definition["context"]} == {"Appointment", "Encounter"}
    assert {c["type"] for c in definition["context"]} == {"element"}


def test_extension_is_complex_with_our_url() -> None:
    by_id = elements()
    assert by_id["Extension"]["max"] == "1"
    assert by_id["Extension.url"]["fixedUri"] == virtual_service.VIRTUAL_SERVICE_URL
    assert by_id["Extension.value[x]"]["max"] == "0"
    assert by_id["Extension.extension"]["slicing"]["discriminator"] == [
        {"type": "value", "path": "url"}
    ]


def test_sub_extensions_are_what_the_code_reads() -> None:
    by_id = elements()
    slices = {e["sliceName"] for e in by_id.values() if "sliceName" in e}
    assert slices == set(SUB_EXTENSIONS)
    for name, (value_type, maximum) in SUB_EXTENSIONS.items():
        head = by_id[f"Extension.extension:{name}"]
        assert (head["min"], head["max"]) == (0, maximum)
        assert by_id[f"Extension.extension:{name}.url"]["fixedUri"] == name
        assert by_id[f"Extension.extension:{name}.extension"]["max"] == "0"
        value = by_id[f"Extension.extension:{name}.value[x]"]
        assert value["type"] == [{"code": value_type}]
        key = "value" + value_type[0].upper() + value_type[1:]
        sample = {
            "Coding": {"system": virtual_service.CHANNEL_TYPE_SYSTEM, "code": "jitsi"},
            "url": "https://example.org/x",
            "positiveInt": 2,
            "string": "s",
        }[value_type]
        resource = {
            "resourceType": "Appointment",
            "extension": [
                {
                    "url": virtual_service.VIRTUAL_SERVICE_URL,
                    "extension": [{"url": name, key: sample}],
                }
            ],
        }
        assert virtual_service.virtual_service(resource) is not None


def test_server_managed_sub_extensions_say_so() -> None:
    by_id = elements()
    for name in virtual_service.SERVER_MANAGED:
        assert "server-managed" in by_id[f"Extension.extension:{name}"]["short"]
    for name in set(SUB_EXTENSIONS) - set(virtual_service.SERVER_MANAGED):
        assert "server-managed" not in by_id[f"Extension.extension:{name}"]["short"]


def test_channel_type_is_bound_to_our_value_set() -> None:
    binding = elements()["Extension.extension:channelType.value[x]"]["binding"]
    assert binding["valueSet"] == virtual_service.CHANNEL_TYPE_VALUESET
    value_set = load("ValueSet-virtual-service-type.json")
    assert value_set["url"] == virtual_service.CHANNEL_TYPE_VALUESET
    assert [i["system"] for i in value_set["compose"]["include"]] == [
        virtual_service.CHANNEL_TYPE_SYSTEM,
        virtual_service.HL7_CHANNEL_TYPE_SYSTEM,
    ]


def test_channel_code_system_is_our_providers() -> None:
    code_system = load("CodeSystem-virtual-service-type.json")
    assert code_system["url"] == virtual_service.CHANNEL_TYPE_SYSTEM
    codes = tuple(c["code"] for c in code_system["concept"])
    assert codes == virtual_service.PROVIDER_CODES
    assert codes == ("jitsi", "livekit", "100ms", "zoom-video-sdk", "daily")
    assert code_system["count"] == len(codes) and code_system["content"] == "complete"
    assert not set(codes) & set(virtual_service.HL7_CHANNEL_CODES)


def test_consent_category_code_system() -> None:
    code_system = load("CodeSystem-consent-category.json")
    assert code_system["url"] == virtual_service.CONSENT_CATEGORY.system
    concepts = [(c["code"], c["display"]) for c in code_system["concept"]]
    assert concepts == [
        (category.code, category.display)
        for category in (virtual_service.CONSENT_CATEGORY, virtual_service.RECORDING_CATEGORY)
    ]
    assert code_system["count"] == len(concepts)


# --- The operations ------------------------------------------------------------------------


def readme_parameters(operation: str) -> list[tuple[str, str, int, str, str]]:
    """The parameter table under `### `$operation`` in extensions/README.md."""
    section = README.read_text().split(f"### `${operation}`", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| (in|out) \| (\d)\.\.(\d|\*) \| (\w+) \|", line)
        if match:
            name, use, low, high, kind = match.groups()
            rows.append((name, use, int(low), high, kind))
    return rows


def parameters(definition: dict[str, Any]) -> list[tuple[str, str, int, str, str]]:
    return [(p["name"], p["use"], p["min"], p["max"], p["type"]) for p in definition["parameter"]]


START = "OperationDefinition-Appointment-start-virtual-visit.json"
END = "OperationDefinition-end-virtual-visit.json"
EVERYTHING = "OperationDefinition-Patient-everything.json"


def test_start_operation() -> None:
    definition = load(START)
    assert OperationDefinition.model_validate(definition).code == "start-virtual-visit"
    assert definition["url"] == virtual_service.START_OPERATION_URL
    assert definition["resource"] == ["Appointment"]
    assert (definition["kind"], definition["affectsState"]) == ("operation", True)
    assert (definition["system"], definition["type"], definition["instance"]) == (
        False,
        False,
        True,
    )
    assert parameters(definition) == [
        ("practitioner", "in", 0, "1", "Reference"),
        ("display", "in", 0, "1", "string"),
        ("encounter", "out", 1, "1", "Encounter"),
        ("hostUrl", "out", 1, "1", "url"),
        ("hostToken", "out", 0, "1", "string"),
        ("patientUrl", "out", 1, "1", "url"),
        ("meetingCode", "out", 1, "1", "string"),
        ("expires", "out", 0, "1", "instant"),
    ]
    (practitioner,) = [p for p in definition["parameter"] if p["name"] == "practitioner"]
    assert practitioner["targetProfile"] == [
        "http://hl7.org/fhir/StructureDefinition/Practitioner",
        "http://hl7.org/fhir/StructureDefinition/PractitionerRole",
    ]


def test_end_operation() -> None:
    definition = load(END)
    assert OperationDefinition.model_validate(definition).code == "end-virtual-visit"
    assert definition["url"] == virtual_service.END_OPERATION_URL
    assert set(definition["resource"]) == {"Encounter", "Appointment"}
    assert (definition["kind"], definition["affectsState"]) == ("operation", True)
    assert (definition["system"], definition["type"], definition["instance"]) == (
        False,
        False,
        True,
    )
    assert parameters(definition) == [
        ("reason", "in", 0, "1", "CodeableConcept"),
        ("return", "out", 1, "1", "Encounter"),
    ]


@pytest.mark.parametrize(
    ("operation", "name"),
    [("start-virtual-visit", START), ("end-virtual-visit", END), ("everything", EVERYTHING)],
)
def test_operation_parameters_are_what_the_readme_documents(operation: str, name: str) -> None:
    documented = readme_parameters(operation)
    assert documented, f"no parameter table for ${operation} in extensions/README.md"
    assert documented == parameters(load(name))


@pytest.mark.parametrize("name", [START, END, EVERYTHING])
def test_every_parameter_is_documented(name: str) -> None:
    for parameter in load(name)["parameter"]:
        assert len(parameter["documentation"]) > 20, parameter["name"]
