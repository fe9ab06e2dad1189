"""Observation/$lastn (R4 observation-operation-lastn.html): the most recent `max`
Observations per code for one subject.

The search parameters are the filters; the matches are read page by page (at most
`max_page_size` at a time) and kept per group, so memory holds the groups' newest
few, never the subject's whole record. Groups follow the OperationDefinition's rules:
two Observations sharing a coding (system and code) are in one group, transitively,
which a union-find over the codings gives; a code with text only groups by its text.
Within a group the newest come first by effective time; ties at the cut are all kept
("more Observations may be returned than is specified in max").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirserver.errors import BadRequest
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.search import search
from fhirserver.resources import codec
from fhirserver.search.query import SearchQuery
from fhirserver.search.time import date_range, to_micros
from fhirserver.storage.base import Store, Version

OBSERVATION = "Observation"
DEFINITION = "http://hl7.org/fhir/OperationDefinition/Observation-lastn"
# The OperationDefinition's "SHALL include": a subject, and a category or a parameter
# over Observation.code (code, and the composites that contain it).
_SUBJECT_PARAMS = ("patient", "subject")
_CODE_PARAMS = ("category", "code", "combo-code", "code-value-", "combo-code-value-")
# Paging and shaping are the operation's, not the client's.
_DROPPED = frozenset(
    {"max", "_count", "_sort", "_cursor", "_total", "_summary", "_include", "_revinclude"}
)


@dataclass(frozen=True)
class LastN:
    """The answer: the newest per group, newest first, and the search it ran (for the
    entries' shaping: `_elements`, `_summary`)."""

    query: SearchQuery
    matches: list[Version]


def lastn_inputs(params: list[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
    """`max` (default 1) and the search criteria; 400 when the subject or the code is
    missing or `max` is not a positive whole number."""
    names = {name.partition(":")[0].partition(".")[0] for name, _ in params}
    if not names & set(_SUBJECT_PARAMS):
        raise BadRequest("$lastn needs a subject: a patient or subject parameter")
    if not any(
        name == p or (p.endswith("-") and name.startswith(p))
        for name in names
        for p in _CODE_PARAMS
    ):
        raise BadRequest("$lastn needs a category parameter or a code parameter")
    given = [value for name, value in params if name == "max"]
    per_group = 1
    if given:
        text = given[-1]
        if not (text.isascii() and text.isdigit()) or len(text) > 6 or int(text) < 1:
            raise BadRequest(
                f"max must be a positive whole number, not {text!r:.40}", expression="max"
            )
        per_group = int(text)
    return per_group, [(name, value) for name, value in params if name not in _DROPPED]


async def lastn(store: Store, params: list[tuple[str, str]], options: ReadOptions) -> LastN:
    per_group, criteria = lastn_inputs(params)
    groups = _Groups(per_group)
    page_size = ("_count", str(options.max_page_size))
    query, result = await search(store, (OBSERVATION,), [*criteria, page_size], options)
    while True:
        for version in result.matches:
            groups.add(version)
        if result.next_cursor is None:
            break
        cursor = ("_cursor", result.next_cursor)
        _, result = await search(store, (OBSERVATION,), [*criteria, page_size, cursor], options)
    return LastN(query, groups.newest_first())


@dataclass
class _Kept:
    # (effective time in micros or None, version), the group's newest and its ties.
    members: list[tuple[int | None, Version]] = field(default_factory=list)


class _Groups:
    def __init__(self, per_group: int) -> None:
        self._per_group = per_group
        # Union-find over group keys ("c|system|code" or "t|text").
        self._parent: dict[str, str] = {}
        self._kept: dict[str, _Kept] = {}

    def add(self, version: Version) -> None:
        assert version.body is not None
        resource = codec.load_object(version.body)
        keys = _group_keys(resource.get("code"))
        if not keys:
            keys = [f"id|{version.id}"]  # no code at all: a group of its own
        root = self._root(keys[0])
        for key in keys[1:]:
            root = self._union(root, self._root(key))
        kept = self._kept.setdefault(root, _Kept())
        kept.members = self._trim([*kept.members, (_effective(resource), version)])

    def newest_first(self) -> list[Version]:
        every = [member for kept in self._kept.values() for member in kept.members]
        every.sort(key=_newest_first)
        return [version for _, version in every]

    def _root(self, key: str) -> str:
        parent = self._parent.setdefault(key, key)
        while parent != key:
            grand = self._parent[parent]
            self._parent[key] = grand
            key, parent = parent, grand
        return key

    def _union(self, a: str, b: str) -> str:
        if a == b:
            return a
        self._parent[b] = a
        merged = self._kept.pop(b, _Kept()).members
        kept = self._kept.setdefault(a, _Kept())
        kept.members = self._trim([*kept.members, *merged])
        return a

    def _trim(self, members: list[tuple[int | None, Version]]) -> list[tuple[int | None, Version]]:
        members.sort(key=_newest_first)
        if len(members) <= self._per_group:
            return members
        cut = members[self._per_group - 1][0]
        tail = members[self._per_group :]
        ties = [m for m in tail if cut is not None and m[0] == cut]
        return members[: self._per_group] + ties


def _newest_first(member: tuple[int | None, Version]) -> tuple[bool, int, str]:
    moment, version = member
    return (moment is None, -(moment or 0), version.id)


def _group_keys(code: Any) -> list[str]:
    if not isinstance(code, dict):
        return []
    keys = [
        f"c|{coding.get('system', '')}|{coding['code']}"
        for coding in code.get("coding") or []
        if isinstance(coding, dict) and isinstance(coding.get("code"), str)
    ]
    if not keys and isinstance(code.get("text"), str):
        keys.append(f"t|{code['text']}")
    return keys


def _effective(resource: dict[str, Any]) -> int | None:
    """When the Observation was made, as the start of its effective[x] in micros."""
    period = resource.get("effectivePeriod")
    text = resource.get("effectiveDateTime") or resource.get("effectiveInstant")
    if text is None and isinstance(period, dict):
        text = period.get("start") or period.get("end")
    if not isinstance(text, str):
        return None
    try:
        return to_micros(date_range(text)[0])
    except BadRequest:
        return None
