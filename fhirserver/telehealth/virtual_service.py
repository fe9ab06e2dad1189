"""The virtual-service extension on an Appointment, and the codes virtual visits use.

R4 has no element for a video visit's connection details; R5 added the
`VirtualServiceDetail` datatype (R5 datatypes.html#VirtualServiceDetail: channelType,
address[x], additionalInfo, maxParticipants, sessionKey) and `Appointment.virtualService`.
We carry the same content in R4 as one complex extension, defined in
`extensions/StructureDefinition-virtual-service.json`:

    {"url": VIRTUAL_SERVICE_URL, "extension": [
        {"url": "channelType", "valueCoding": {"system": ..., "code": "jitsi"}},  0..1
        {"url": "address", "valueUrl": "https://..."},                          0..1  server
        {"url": "additionalInfo", "valueUrl": "https://..."},                   0..*
        {"url": "maxParticipants", "valuePositiveInt": 2},                      0..1
        {"url": "sessionKey", "valueString": "..."},                            0..1  server
        {"url": "meetingCode", "valueString": "K7PX3MWQ9C"}]}                   0..1  server

The Appointment is virtual when it carries the extension (`is_virtual`); `address`,
`sessionKey` and `meetingCode` are set by the server when it provisions the room
(`appointment_lifecycle.check_appointment` keeps clients from writing them). `address` is R5's
`address[x]` restricted to its url choice.

An R4 Consent for `require_consent` (R4 consent.html) is read by
`consent_permits_visit`; the accepted shape is documented there and in
extensions/README.md.

Everything here works on plain JSON dicts, as the store keeps resources, and never
mutates its input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhirserver.errors import FHIRError, Issue, Unprocessable
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.search.time import date_range

#: The base of every canonical URL the server defines (StructureDefinition, CodeSystem,
#: ValueSet, OperationDefinition). extensions/*.json use it, and a test checks they do.
BASE_URL = "http://fhirserver.dev/fhir"

VIRTUAL_SERVICE_URL = f"{BASE_URL}/StructureDefinition/virtual-service"
#: Our channel types: the video providers the server drives (providers/ `name`s).
CHANNEL_TYPE_SYSTEM = f"{BASE_URL}/CodeSystem/virtual-service-type"
CHANNEL_TYPE_VALUESET = f"{BASE_URL}/ValueSet/virtual-service-type"
PROVIDER_CODES = ("jitsi", "livekit", "100ms", "zoom-video-sdk", "daily")
#: R5's code system for channel types (zoom, ms-teams, whatsapp); not in R4 itself.
HL7_CHANNEL_TYPE_SYSTEM = "http://hl7.org/fhir/virtual-service-type"
HL7_CHANNEL_CODES = ("zoom", "ms-teams", "whatsapp")

START_OPERATION_URL = f"{BASE_URL}/OperationDefinition/Appointment-start-virtual-visit"
END_OPERATION_URL = f"{BASE_URL}/OperationDefinition/end-virtual-visit"

#: R5 `Encounter.participant.actor` in R4 (R5 versions.html#extensions: the cross-version
#: extension for an element R4 lacks). R4 `Encounter.participant.individual` admits only
#: Practitioner, PractitionerRole and RelatedPerson, so a Patient (or a guest known only
#: by name) who joins the call is recorded through this extension.
PARTICIPANT_ACTOR_URL = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.participant.actor"
)

ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONSENT_SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_CATEGORY_SYSTEM = f"{BASE_URL}/CodeSystem/consent-category"

# Sub-extension names (relative URLs inside the complex extension).
CHANNEL_TYPE = "channelType"
ADDRESS = "address"
ADDITIONAL_INFO = "additionalInfo"
MAX_PARTICIPANTS = "maxParticipants"
SESSION_KEY = "sessionKey"
MEETING_CODE = "meetingCode"
#: Set by the server only; a client's values are never stored (appointment_lifecycle.py).
SERVER_MANAGED = (ADDRESS, SESSION_KEY, MEETING_CODE)

_VALUE_KEYS = {
    CHANNEL_TYPE: "valueCoding",
    ADDRESS: "valueUrl",
    ADDITIONAL_INFO: "valueUrl",
    MAX_PARTICIPANTS: "valuePositiveInt",
    SESSION_KEY: "valueString",
    MEETING_CODE: "valueString",
}
_REPEATING = frozenset({ADDITIONAL_INFO})


@dataclass(frozen=True)
class Coding:
    """An R4 Coding reduced to what the server compares and writes."""

    system: str | None
    code: str
    display: str | None = None

    def to_json(self) -> JSONObject:
        coding: JSONObject = {}
        if self.system is not None:
            coding["system"] = self.system
        coding["code"] = self.code
        if self.display is not None:
            coding["display"] = self.display
        return coding

    def matches(self, coding: Any) -> bool:
        """Whether a Coding (JSON) has this system and code."""
        return (
            isinstance(coding, dict)
            and coding.get("system") == self.system
            and coding.get("code") == self.code
        )

    def in_concept(self, concept: Any) -> bool:
        """Whether a CodeableConcept (JSON) carries this system and code."""
        codings = concept.get("coding") if isinstance(concept, dict) else None
        return isinstance(codings, list) and any(self.matches(c) for c in codings)


#: Encounter.class of a virtual visit (R4 v3 ActEncounterCode VR, "virtual").
VR_CLASS = Coding(ACT_CODE_SYSTEM, "VR", "virtual")
#: Consent.scope the server accepts for `require_consent`.
CONSENT_SCOPE = Coding(CONSENT_SCOPE_SYSTEM, "treatment", "Treatment")
#: Consent.category the server accepts for `require_consent` (our code system).
CONSENT_CATEGORY = Coding(CONSENT_CATEGORY_SYSTEM, "telehealth", "Telehealth visit")
RECORDING_CATEGORY = Coding(
    CONSENT_CATEGORY_SYSTEM, "telehealth-recording", "Telehealth visit recording"
)
OPT_OUT = Coding(ACT_CODE_SYSTEM, "OPTOUT")


@dataclass(frozen=True)
class VirtualService:
    """The content of the virtual-service extension; None/empty where absent."""

    channel_type: Coding | None = None
    address: str | None = None
    additional_info: tuple[str, ...] = ()
    max_participants: int | None = None
    session_key: str | None = None
    meeting_code: str | None = None

    def is_empty(self) -> bool:
        return self == VirtualService()

    def to_extension(self) -> JSONObject:
        """The extension as JSON, sub-extensions in the StructureDefinition's order.
        Raises ValueError for an empty service: an extension needs content (R4 ext-1)."""
        parts: list[JSONObject] = []
        if self.channel_type is not None:
            parts.append({"url": CHANNEL_TYPE, "valueCoding": self.channel_type.to_json()})
        if self.address is not None:
            parts.append({"url": ADDRESS, "valueUrl": self.address})
        parts.extend({"url": ADDITIONAL_INFO, "valueUrl": info} for info in self.additional_info)
        if self.max_participants is not None:
            parts.append({"url": MAX_PARTICIPANTS, "valuePositiveInt": self.max_participants})
        if self.session_key is not None:
            parts.append({"url": SESSION_KEY, "valueString": self.session_key})
        if self.meeting_code is not None:
            parts.append({"url": MEETING_CODE, "valueString": self.meeting_code})
        if not parts:
            raise ValueError("An empty virtual-service extension is not valid FHIR (ext-1)")
        extension: JSONObject = {"url": VIRTUAL_SERVICE_URL, "extension": parts}
        return extension


def channel_type(code: str) -> Coding:
    """The channelType Coding for a provider name or an HL7 channel code."""
    if code in PROVIDER_CODES:
        return Coding(CHANNEL_TYPE_SYSTEM, code)
    if code in HL7_CHANNEL_CODES:
        return Coding(HL7_CHANNEL_TYPE_SYSTEM, code)
    raise ValueError(f"Unknown channel type {code!r}")


def provider_name(service: VirtualService | None) -> str | None:
    """The channel's code when it is one the server knows (ours: PROVIDER_CODES;
    R5's: zoom, ms-teams, whatsapp); None for no service, no channelType, or a code
    system we do not know. Whether a provider is configured for it is not decided here."""
    if service is None or service.channel_type is None:
        return None
    coding = service.channel_type
    if coding.system == CHANNEL_TYPE_SYSTEM and coding.code in PROVIDER_CODES:
        return coding.code
    if coding.system == HL7_CHANNEL_TYPE_SYSTEM and coding.code in HL7_CHANNEL_CODES:
        return coding.code
    return None


def is_virtual(resource: JSONObject | None) -> bool:
    """Whether the resource carries the virtual-service extension (content unchecked)."""
    return resource is not None and any(True for _ in _ours(resource))


def virtual_service(resource: JSONObject) -> VirtualService | None:
    """The resource's virtual-service extension, or None without one.

    Raises `Unprocessable` (422, with the FHIRPath of the culprit) for an extension that
    breaks its StructureDefinition: more than one of it, a value[x] on it, a sub-extension
    repeated beyond its cardinality, with the wrong value type or an unknown relative name.
    Sub-extensions with absolute URLs are other extensions (open slicing) and ignored.
    """
    found = list(_ours(resource))
    if not found:
        return None
    kind = str(resource.get("resourceType", "Resource"))
    index, extension = found[0]
    where = f"{kind}.extension[{index}]"
    if len(found) > 1:
        raise _invalid(
            f"{kind} carries the virtual-service extension more than once",
            f"{kind}.extension[{found[1][0]}]",
        )
    if any(key.startswith("value") for key in extension):
        raise _invalid("The virtual-service extension is complex: it has no value[x]", where)
    parts = extension.get("extension")
    if not isinstance(parts, list) or not parts:
        raise _invalid(
            "The virtual-service extension needs its sub-extensions (ext-1), e.g. channelType",
            where,
        )
    values: dict[str, list[Any]] = {}
    for position, part in enumerate(parts):
        here = f"{where}.extension[{position}]"
        name = part.get("url") if isinstance(part, dict) else None
        if not isinstance(name, str):
            raise _invalid("virtual-service: a sub-extension has no url", here)
        if ":" in name:
            continue
        if name not in _VALUE_KEYS:
            known = ", ".join(_VALUE_KEYS)
            raise _invalid(f"virtual-service has no sub-extension {name!r} (known: {known})", here)
        if name in values and name not in _REPEATING:
            raise _invalid(f"virtual-service: {name} may appear once only", here)
        values.setdefault(name, []).append(_value(name, part, here))
    coding = values.get(CHANNEL_TYPE, [None])[0]
    return VirtualService(
        channel_type=coding,
        address=values.get(ADDRESS, [None])[0],
        additional_info=tuple(values.get(ADDITIONAL_INFO, ())),
        max_participants=values.get(MAX_PARTICIPANTS, [None])[0],
        session_key=values.get(SESSION_KEY, [None])[0],
        meeting_code=values.get(MEETING_CODE, [None])[0],
    )


def with_virtual_service(resource: JSONObject, service: VirtualService | None) -> JSONObject:
    """A copy of `resource` whose virtual-service extension is `service` (None: removed).

    The new extension takes the place of the old one; other extensions stay as they were,
    in their order. The input is not modified.
    """
    extensions = resource.get("extension")
    others = [e for e in extensions if not _is_ours(e)] if isinstance(extensions, list) else []
    at = next((i for i, _ in _ours(resource)), len(others))
    if service is not None:
        others.insert(at, service.to_extension())
    updated = dict(resource)
    if others:
        updated["extension"] = others
    else:
        updated.pop("extension", None)
    return updated


def patient_reference(appointment: JSONObject) -> str | None:
    """`Patient/id` of the Appointment's first Patient participant, if any."""
    for participant in _list(appointment.get("participant")):
        actor = local_reference(participant.get("actor"))
        if actor is not None and actor.startswith("Patient/"):
            return actor
    return None


def consent_permits_recording(consent: JSONObject, patient: str, at: datetime) -> bool:
    """Whether `consent` lets the visits of `patient` be recorded at `at`: the same shape
    as `consent_permits_visit`, with the category `RECORDING_CATEGORY`
    (consent-category#telehealth-recording) in place of the visit's. A Consent of its own,
    so that a patient who agrees to video visits is not thereby recorded, and can take
    back the recording alone (status inactive, or a root provision of type deny).

    Stricter than a visit's, because a recording is kept:
    - it covers nothing before it was given (`given_at`);
    - a nested `provision.provision` of type deny, at any depth, refuses: it is an
      exception to the root rule (R4 consent.html) for an actor, purpose, action or data
      the server cannot show the recording falls outside of.
    """
    if not consent_permits_visit(consent, patient, at, RECORDING_CATEGORY):
        return False
    given = given_at(consent)
    return given is not None and given <= at and not _denies(consent.get("provision"), root=True)


# Time zones run from -12:00 to +14:00: a day written without one may end this late in UTC.
_LATEST_ZONE = timedelta(hours=12)


def given_at(consent: JSONObject) -> datetime | None:
    """The earliest instant the Consent is known to have been given, or None.

    `Consent.dateTime` ("when this Consent was issued") with a time is that instant. A
    date alone ("2024-05-17", or a month, or a year) is read at its latest edge in the
    latest time zone, unless the server stored this version earlier (`meta.lastUpdated`:
    it was given by then). Undated, the time the server stored this version (a later
    edit moves it on: undated Consents are read strictly)."""
    meta = consent.get("meta")
    stored_text = meta.get("lastUpdated") if isinstance(meta, dict) else None
    try:
        stored = _bound(stored_text, low=True) if isinstance(stored_text, str) else None
        text = consent.get("dateTime")
        if not isinstance(text, str):
            return stored
        if "T" in text:
            return _bound(text, low=True)
        latest = _bound(text, low=False) + _LATEST_ZONE
    except FHIRError:
        return None
    return min(latest, stored) if stored is not None else latest


def _denies(provision: Any, *, root: bool = False) -> bool:
    """Whether a nested provision below `provision` (or it, when nested) is a deny."""
    if not isinstance(provision, dict):
        return False
    if not root and provision.get("type") == "deny":
        return True
    return any(_denies(nested) for nested in _list(provision.get("provision")))


def consent_permits_visit(
    consent: JSONObject, patient: str, at: datetime, category: Coding = CONSENT_CATEGORY
) -> bool:
    """Whether `consent` is a telehealth consent of `patient` ("Patient/id") in force at `at`.

    The shape accepted (R4 consent.html; all of it must hold):
    - `resourceType` Consent, `status` = active;
    - `scope` has http://terminology.hl7.org/CodeSystem/consentscope#treatment;
    - `category` has a CodeableConcept with `category` (by default our `CONSENT_CATEGORY`,
      consent-category#telehealth);
    - `patient` references the visit's patient;
    - `policy` or `policyRule` is present (R4 invariant ppc-1), and `policyRule` is not
      v3-ActCode#OPTOUT (the patient declined);
    - `provision` (optional): its `type` is permit or absent (R4 defines the root rule's type
      as "not permitted in root rule"; a root `deny` refuses), and its `period`, when given,
      contains `at` (a bound written without a time zone is read as UTC).
    Nested `provision.provision` rules are not evaluated: they refine actions and data
    (e.g. recording, sharing), not the visit itself.
    """
    if consent.get("resourceType") != "Consent" or consent.get("status") != "active":
        return False
    if not CONSENT_SCOPE.in_concept(consent.get("scope")):
        return False
    if not any(category.in_concept(c) for c in _list(consent.get("category"))):
        return False
    if local_reference(consent.get("patient")) != patient:
        return False
    policy_rule = consent.get("policyRule")
    if not consent.get("policy") and not policy_rule:
        return False
    if OPT_OUT.in_concept(policy_rule):
        return False
    provision = consent.get("provision")
    if not isinstance(provision, dict):
        return True
    if provision.get("type", "permit") != "permit":
        return False
    period = provision.get("period")
    try:
        return not isinstance(period, dict) or _within(period, at)
    except FHIRError:  # a bound that is no dateTime cannot be shown to cover the visit
        return False


def _within(period: JSONObject, at: datetime) -> bool:
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and at < _bound(start, low=True):
        return False
    return not (isinstance(end, str) and at >= _bound(end, low=False))


def _bound(text: str, *, low: bool) -> datetime:
    """A dateTime's low or high edge: "2024" is [2024-01-01, 2025-01-01) (R4 datatypes)."""
    lo, hi = date_range(text)
    return lo if low else hi


def _ours(resource: JSONObject) -> Iterator[tuple[int, JSONObject]]:
    extensions = resource.get("extension")
    if isinstance(extensions, list):
        for index, extension in enumerate(extensions):
            if _is_ours(extension):
                yield index, extension


def _is_ours(extension: Any) -> bool:
    return isinstance(extension, dict) and extension.get("url") == VIRTUAL_SERVICE_URL


def _list(value: Any) -> list[JSONObject]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _value(name: str, part: JSONObject, where: str) -> Any:
    key = _VALUE_KEYS[name]
    given = [k for k in part if k.startswith("value")]
    if given != [key]:
        raise _invalid(f"virtual-service: {name} takes {key}", where)
    value = part[key]
    if name == CHANNEL_TYPE:
        code = value.get("code") if isinstance(value, dict) else None
        system = value.get("system") if isinstance(value, dict) else None
        if not isinstance(code, str) or not (system is None or isinstance(system, str)):
            raise _invalid("virtual-service: channelType needs a code", f"{where}.valueCoding")
        display = value.get("display")
        return Coding(system, code, display if isinstance(display, str) else None)
    if name == MAX_PARTICIPANTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid("virtual-service: maxParticipants is a positiveInt", f"{where}.{key}")
        return value
    if not isinstance(value, str) or not value:
        raise _invalid(f"virtual-service: {name} is a non-empty string", f"{where}.{key}")
    return value


def _invalid(diagnostics: str, expression: str) -> Unprocessable:
    return Unprocessable(diagnostics, issues=[Issue(diagnostics, "invalid", "error", expression)])
