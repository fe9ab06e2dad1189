"""What a bulk export asks for (Bulk Data Access IG 2.0.0 export.html "Query
Parameters"), checked once at kick-off and kept in the job's payload as JSON.

An unsupported or invalid parameter is refused (400) unless the client sent
`Prefer: handling=lenient`: then it is left out and named in the manifest's `error`
(export.html "Bulk Data Kick-off Request", `Prefer` header). The `Access` of the
kick-off travels with the request as scopes, patient and user, never as a token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from fhirserver.auth.access import Access
from fhirserver.auth.compartment import in_patient_compartment
from fhirserver.auth.scopes import parse_scopes
from fhirserver.errors import FHIRError, NotSupported
from fhirserver.resources.definitions import is_resource_type, resource_types
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    Predicate,
    SearchQuery,
)
from fhirserver.search.time import date_range

SYSTEM, PATIENT, GROUP = "system", "patient", "group"
# export.html "_outputFormat": the server SHALL support NDJSON under these names.
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
# Parameters the IG defines that this server does not implement (yet): refused, or
# reported under lenient handling.
UNSUPPORTED = ("organizeOutputBy", "allowPartialManifests")
# export.html "includeAssociatedData" (CodeSystem include-associated-data): the codes this
# server supports. Relevant: every Provenance targeting an exported resource; Latest:
# only the most recent one for each (by `recorded`).
LATEST_PROVENANCE = "LatestProvenanceResources"
RELEVANT_PROVENANCE = "RelevantProvenanceResources"
ASSOCIATED = (LATEST_PROVENANCE, RELEVANT_PROVENANCE)
# Parameters that shape the HTTP exchange only.
_IGNORED = ("_format",)


@dataclass(frozen=True)
class ExportRequest:
    level: str
    # The types exported, in the order their files are written.
    types: tuple[str, ...]
    since: datetime | None = None
    # export.html "_until": only resources last changed before this instant.
    until: datetime | None = None
    # includeAssociatedData: None, LATEST_PROVENANCE or RELEVANT_PROVENANCE.
    associated: str | None = None
    # (type, search query string) pairs; several for one type are OR'ed.
    type_filters: tuple[tuple[str, str], ...] = ()
    # `_elements` items as given: `element` or `Type.element`.
    elements: tuple[str, ...] = ()
    # Only these patients' compartments (Group members, or `patient`); None: any.
    patients: tuple[str, ...] | None = None
    group_id: str | None = None
    # The kick-off URL, echoed as the manifest's `request`.
    request_url: str = ""
    # The kick-off's Access, without its token: what the export may read.
    client_id: str | None = None
    scopes: str = "system/*.cruds"
    user: str | None = None
    patient: str | None = None
    # Parameters left out under lenient handling, and why (the manifest's `error`).
    problems: tuple[str, ...] = field(default=())

    def access(self) -> Access:
        return Access(
            client_id=self.client_id,
            scopes=parse_scopes(self.scopes),
            user=self.user,
            patient=self.patient,
        )

    def with_access(self, access: Access) -> ExportRequest:
        return replace(
            self,
            client_id=access.client_id,
            scopes=str(access.scopes),
            user=access.user,
            patient=access.patient,
        )

    def filters(self) -> dict[str, SearchQuery]:
        """Per type, one query whose only clause ORs the type's `_typeFilter`s, each a
        conjunction of its own (search/query.py AllOfPredicate)."""
        grouped: dict[str, list[AllOfPredicate]] = {}
        for resource_type, text in self.type_filters:
            query = _filter_query(resource_type, text)
            grouped.setdefault(resource_type, []).append(
                AllOfPredicate(query.clauses, resource_type)
            )
        return {
            name: SearchQuery((name,), clauses=(tuple(options),))
            for name, options in grouped.items()
        }

    def elements_for(self, resource_type: str) -> tuple[str, ...]:
        """export.html "_elements": `element` applies to every type, `Type.element` to one."""
        chosen: list[str] = []
        for item in self.elements:
            prefix, _, name = item.rpartition(".")
            if not prefix or prefix == resource_type:
                chosen.append(name)
        return tuple(chosen)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = None if self.since is None else self.since.isoformat()
        data["until"] = None if self.until is None else self.until.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRequest:
        since, until = data.get("since"), data.get("until")
        patients = data.get("patients")
        return cls(
            level=data["level"],
            types=tuple(data["types"]),
            since=None if since is None else datetime.fromisoformat(since),
            until=None if until is None else datetime.fromisoformat(until),
            associated=data.get("associated"),
            type_filters=tuple((name, text) for name, text in data.get("type_filters", ())),
            elements=tuple(data.get("elements", ())),
            patients=None if patients is None else tuple(patients),
            group_id=data.get("group_id"),
            request_url=data.get("request_url", ""),
            client_id=data.get("client_id"),
            scopes=data.get("scopes", ""),
            user=data.get("user"),
            patient=data.get("patient"),
            problems=tuple(data.get("problems", ())),
        )


_TYPE_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


def exportable_types(level: str) -> tuple[str, ...]:
    """System level: every type; Patient and Group level: the types that can be in a
    patient's compartment (export.html "Endpoint - All Patients")."""
    if level == SYSTEM:
        return resource_types()
    return tuple(name for name in resource_types() if in_patient_compartment(name))


def parse_export(level: str, params: Sequence[tuple[str, str]], *, lenient: bool) -> ExportRequest:
    """The request the kick-off parameters make. Raises NotSupported (400) for the first
    unsupported or invalid one unless `lenient`, which leaves them out and lists them."""
    problems: list[str] = []

    def problem(text: str) -> None:
        if not lenient:
            raise NotSupported(text)
        problems.append(text)

    allowed = exportable_types(level)
    types: list[str] = []
    since: datetime | None = None
    until: datetime | None = None
    associated: set[str] = set()
    filters: list[tuple[str, str]] = []
    elements: list[str] = []
    patients: list[str] = []
    for name, value in params:
        if name == "_outputFormat":
            if value not in OUTPUT_FORMATS:
                problem(f"_outputFormat {value!r} is not supported: use application/fhir+ndjson")
        elif name == "_since":
            since = _instant(value)
            if since is None:
                problem(f"_since {value!r} is not a FHIR instant (with a time zone)")
        elif name == "_until":
            until = _instant(value)
            if until is None:
                problem(f"_until {value!r} is not a FHIR instant (with a time zone)")
        elif name == "includeAssociatedData":
            for item in _items(value):
                if item in ASSOCIATED:
                    associated.add(item)
                else:
                    problem(f"includeAssociatedData {item!r} is not supported by this server")
        elif name == "_type":
            for item in _items(value):
                if item in allowed:
                    types.append(item)
                else:
                    problem(f"_type {item!r} is not a resource type exported at this level")
        elif name == "_elements":
            for item in _items(value):
                if _valid_element(item):
                    elements.append(item)
                else:
                    problem(f"_elements {item!r} is not `element` or `ResourceType.element`")
        elif name == "_typeFilter":
            # export.html: a comma-delimited list of search queries; a comma inside a
            # query's own values (`status=active,completed`) is not followed by `Type?`.
            for query in _TYPE_FILTER_SPLIT.split(value):
                why = _type_filter_problem(query)
                if why is None:
                    resource_type, _, text = query.partition("?")
                    filters.append((resource_type, text))
                else:
                    problem(f"_typeFilter {query!r}: {why}")
        elif name == "patient":
            patient_id = value.removeprefix("Patient/")
            if level == SYSTEM or not patient_id or "/" in patient_id:
                problem(f"patient {value!r}: a Patient reference at Patient or Group level")
            else:
                patients.append(patient_id)
        elif name in UNSUPPORTED:
            problem(f"{name} is not supported by this server")
        elif name not in _IGNORED:
            problem(f"Unknown parameter {name!r}")
    chosen = tuple(dict.fromkeys(types)) if types else allowed
    return ExportRequest(
        level=level,
        types=chosen,
        since=since,
        until=until,
        # Relevant includes Latest: asked for both, the export gives every relevant one.
        associated=_associated(associated),
        type_filters=tuple(filters),
        elements=tuple(elements),
        patients=tuple(dict.fromkeys(patients)) if patients else None,
        problems=tuple(problems),
    )


def _associated(codes: set[str]) -> str | None:
    if RELEVANT_PROVENANCE in codes:
        return RELEVANT_PROVENANCE
    return LATEST_PROVENANCE if codes else None


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _instant(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None and "T" in value else None


def _valid_element(item: str) -> bool:
    prefix, _, name = item.rpartition(".")
    if prefix and not is_resource_type(prefix):
        return False
    return bool(name) and name.replace("_", "").isalnum()


def _filter_query(resource_type: str, text: str) -> SearchQuery:
    return parse_search((resource_type,), parse_qsl(text, keep_blank_values=True), strict=True)


def _type_filter_problem(value: str) -> str | None:
    """Why this `_typeFilter` cannot be applied, or None. Chains and `_has` need other
    resources as they were at the snapshot, which the export does not read."""
    resource_type, mark, text = value.partition("?")
    if not mark or not is_resource_type(resource_type):
        return "expected ResourceType?search-parameters"
    try:
        query = _filter_query(resource_type, text)
    except FHIRError as exc:
        return str(exc)
    if query.ignored or query.sort or query.includes or query.elements or query.summary:
        return "only search criteria are allowed"
    if any(_reaches_out(p) for clause in query.clauses for p in clause):
        return "chained parameters and _has are not supported in an export"
    return None


def _reaches_out(predicate: Predicate) -> bool:
    if isinstance(predicate, ChainPredicate | HasPredicate):
        return True
    if isinstance(predicate, AllOfPredicate):
        return any(_reaches_out(p) for clause in predicate.clauses for p in clause)
    return False


def member_ids(group: dict[str, Any], now: datetime) -> tuple[str, ...]:
    """The patients a Group has as members at `now` (R4 group.html), as ids.

    - `Group.actual = false`: a definitional group describes a kind of patient and has
      no members (invariant grp-1: "Can only have members if group is actual"); its
      export is empty, as HAPI FHIR's is (its group export finds members with
      `Patient?_has:Group:member:_id=[id]`, JpaBulkExportProcessor, and a definitional
      group lists none), rather than refused.
    - `member.inactive = true`, or a `member.period` that ended before `now` or starts
      after it: not a member now.
    - Members of other types (a Group of Groups, devices) contribute no compartment.
    """
    if group.get("actual") is False:
        return ()
    ids: list[str] = []
    for member in group.get("member") or ():
        if not isinstance(member, dict) or member.get("inactive") is True:
            continue
        if not _member_now(member.get("period"), now):
            continue
        reference = (member.get("entity") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            ids.append(reference.removeprefix("Patient/"))
    return tuple(dict.fromkeys(ids))


def _member_now(period: Any, now: datetime) -> bool:
    """Whether `now` lies in a member's period (R4 datatypes.html#Period: a missing end
    is ongoing; a date given to the day or month covers all of it). A period that is
    not a valid Period leaves the member in: the Group was accepted as valid."""
    if not isinstance(period, dict):
        return True
    start, end = period.get("start"), period.get("end")
    try:
        if isinstance(start, str) and date_range(start, "period.start")[0] > now:
            return False
        if isinstance(end, str) and date_range(end, "period.end")[1] <= now:
            return False
    except FHIRError:
        return True
    return True


def compartment_of(request: ExportRequest, group_members: Iterable[str] | None) -> ExportRequest:
    """The request limited to a Group's members (intersected with `patient`, if given)."""
    if group_members is None:
        return request
    members = tuple(group_members)
    if request.patients is not None:
        members = tuple(m for m in members if m in request.patients)
    return replace(request, patients=members)
