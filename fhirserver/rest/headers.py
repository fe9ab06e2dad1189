"""HTTP headers FHIR gives meaning to: ETag, If-Match, If-None-Match, If-Modified-Since,
Last-Modified, Prefer (R4 http.html#versioning, #cread, #ops)."""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request

from fhirserver.errors import BadRequest
from fhirserver.storage.base import Version

_ETAG = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')
RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0), usegmt=True)


def version_headers(version: Version) -> dict[str, str]:
    return {"ETag": etag(version.version), "Last-Modified": http_date(version.last_updated)}


def if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    match = _ETAG.match(raw)
    if match is None:
        raise BadRequest(f'If-Match must be a version ETag such as W/"3", not {raw!r}')
    return int(match.group(1))


def not_modified(request: Request, version: Version) -> bool:
    """Whether If-None-Match or If-Modified-Since make this read a 304 (R4 http.html#cread)."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = [tag.strip() for tag in none_match.split(",")]
        return "*" in tags or any(
            (m := _ETAG.match(tag)) is not None and int(m.group(1)) == version.version
            for tag in tags
        )
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        moment = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # RFC 9110: an invalid date is ignored.
    if moment.tzinfo is None:
        return False
    return version.last_updated.replace(microsecond=0) <= moment


def return_preference(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(";"):
        for token in part.split(","):
            key, _, value = token.strip().partition("=")
            if key == "return" and value.strip('"') in RETURN_PREFERENCES:
                return value.strip('"')
    return "representation"
