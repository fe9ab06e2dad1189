"""HTTP headers FHIR gives meaning to: ETag, If-Match, If-None-Match, If-Modified-Since,
Last-Modified, Prefer (R4 http.html#versioning, #cread, #ops)."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

from starlette.requests import Request

from fhirserver.interactions.preconditions import ETAG, Preconditions, parse_preconditions
from fhirserver.storage.base import Version

RETURN_PREFERENCES = ("minimal", "representation", "OperationOutcome")


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0), usegmt=True)


def version_headers(version: Version) -> dict[str, str]:
    return {"ETag": etag(version.version), "Last-Modified": http_date(version.last_updated)}


def preconditions(request: Request) -> Preconditions:
    """If-Match / If-None-Match of a write request."""
    return parse_preconditions(
        request.headers.get("if-match"), request.headers.get("if-none-match")
    )


def not_modified(request: Request, version: Version) -> bool:
    """Whether If-None-Match or If-Modified-Since make this read a 304 (R4 http.html#cread)."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = [tag.strip() for tag in none_match.split(",")]
        return "*" in tags or any(
            (m := ETAG.fullmatch(tag)) is not None and int(m.group(1)) == version.version
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


def _prefer(request: Request) -> dict[str, str]:
    """The Prefer header's preferences (RFC 7240), e.g. {"return": "minimal"}."""
    preferences = {}
    for part in request.headers.get("prefer", "").split(";"):
        for token in part.split(","):
            key, _, value = token.partition("=")
            preferences[key.strip()] = value.strip().strip('"')
    return preferences


def return_preference(request: Request) -> str:
    value = _prefer(request).get("return", "")
    return value if value in RETURN_PREFERENCES else "representation"


def strict_handling(request: Request) -> bool:
    """`Prefer: handling=strict` (search.html#errors): refuse what would be ignored."""
    return _prefer(request).get("handling") == "strict"
