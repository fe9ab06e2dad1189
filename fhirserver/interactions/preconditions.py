"""What a write request must meet before anything is written (R4 http.html#concurrency,
#ccreate, #update): If-Match / If-None-Match versions, If-None-Exist criteria, and the
id an update's body carries.

The same values come from HTTP headers and from a Bundle entry's request.ifMatch,
request.ifNoneMatch and request.ifNoneExist, so both parse them here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from fhirserver.errors import BadRequest, PreconditionFailed
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Version

ANY: Literal["*"] = "*"

# Version numbers an If-Match / If-None-Match names, or ANY for "*".
VersionTags = frozenset[int] | Literal["*"]

# A version ETag as clients send it: W/"3", "3" or 3.
ETAG = re.compile(r'\s*(?:W/)?"?([0-9]{1,18})"?\s*')


@dataclass(frozen=True, slots=True)
class Preconditions:
    """If-Match / If-None-Match on a write (RFC 9110 section 13.1): version numbers, or
    ANY for "*" (any current version); None where the header is absent."""

    if_match: VersionTags | None = None
    if_none_match: VersionTags | None = None

    def none_match(self, version: int) -> bool:
        """If-None-Match names this version: a read of it answers 304 (R4 http.html#cread)."""
        return _names(self.if_none_match, version)


NO_PRECONDITIONS = Preconditions()


def parse_preconditions(if_match: str | None, if_none_match: str | None) -> Preconditions:
    """From If-Match / If-None-Match headers, or a Bundle entry's request.ifMatch /
    request.ifNoneMatch, which carry the same values."""
    return Preconditions(_versions("If-Match", if_match), _versions("If-None-Match", if_none_match))


def if_none_exist_criteria(text: str) -> list[tuple[str, str]]:
    """If-None-Exist (header or request.ifNoneExist): the query part of a search URL
    (R4 http.html#ccreate), with or without the `Type?` in front."""
    return parse_qsl(text.split("?")[-1], keep_blank_values=True)


def check_preconditions(current: Version | None, preconditions: Preconditions) -> None:
    """412 unless the preconditions hold for `current`, the resource's current version
    (a deleted or absent resource has none)."""
    held = None if current is None or current.deleted else current.version
    if preconditions.if_match is not None and not _names(preconditions.if_match, held):
        raise PreconditionFailed(f"If-Match does not hold: the current version is {held}")
    if _names(preconditions.if_none_match, held):
        raise PreconditionFailed(f"If-None-Match does not hold: the current version is {held}")


def check_body_id(resource: JSONObject, resource_id: str) -> None:
    """An update's body carries the id its URL names (R4 http.html#update)."""
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource must carry its id for an update", expression="id")
    if body_id != resource_id:
        raise BadRequest(
            f"The id in the body ({body_id!r}) does not match the URL ({resource_id!r})",
            expression="id",
        )


def _names(tags: VersionTags | None, version: int | None) -> bool:
    """Whether the tags name this version; "*" names any, and nothing names no version."""
    return tags is not None and version is not None and (tags == ANY or version in tags)


def _versions(header: str, raw: str | None) -> VersionTags | None:
    if raw is None:
        return None
    if raw.strip() == "*":
        return ANY
    versions = set()
    for tag in raw.split(","):
        match = ETAG.fullmatch(tag)
        if match is None:
            raise BadRequest(f'{header} must list version ETags such as W/"3", not {raw!r:.60}')
        versions.add(int(match.group(1)))
    return frozenset(versions)
