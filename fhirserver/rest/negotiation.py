"""Content negotiation (R4 http.html#mime-type): JSON in, JSON out, `_format` and `_pretty`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhirserver.errors import BadRequest, NotAcceptable, PayloadTooLarge, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
PLAIN_JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
FORM = "application/x-www-form-urlencoded"
# What a client may send a resource as (application/json+fhir is the DSTU2 name).
RESOURCE_TYPES = frozenset({FHIR_JSON, PLAIN_JSON, "application/json+fhir"})
_FORMATS = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    PLAIN_JSON: PLAIN_JSON,
    "application/json+fhir": FHIR_JSON,
}
_ANY = frozenset({"*/*", "application/*"})


@dataclass(frozen=True, slots=True)
class Format:
    media_type: str
    pretty: bool


def response_format(request: Request) -> Format:
    pretty_value = request.query_params.get("_pretty", "false")
    if pretty_value not in ("true", "false"):
        raise BadRequest("_pretty must be true or false", expression="_pretty")
    return Format(_media_type(request), pretty_value == "true")


def _media_type(request: Request) -> str:
    requested = request.query_params.get("_format")
    if requested is not None:
        media_type = _FORMATS.get(requested.split(";")[0].strip().lower())
        if media_type is None:
            raise NotAcceptable(f"_format {requested!r} is not supported: this server speaks JSON")
        return media_type
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return FHIR_JSON
    for part in accept.split(","):
        media_type = part.split(";")[0].strip().lower()
        if not _is_r4(part):
            continue
        if media_type in _FORMATS:
            return _FORMATS[media_type]
        if media_type in _ANY:
            return FHIR_JSON
    raise NotAcceptable(f"Cannot answer in any of {accept!r}: this server speaks JSON")


def _is_r4(media_range: str) -> bool:
    """A media type's fhirVersion parameter, if any, must name R4 (http.html#version-parameter)."""
    for parameter in media_range.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "fhirversion" and not value.strip().strip('"').startswith("4.0"):
            return False
    return True


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lower case."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def require_content_type(request: Request, allowed: frozenset[str]) -> None:
    raw = request.headers.get("content-type")
    if media_type(request) not in allowed or not _is_r4(raw or ""):
        expected = " or ".join(sorted(allowed))
        raise UnsupportedMediaType(f"Content-Type {raw!r} is not supported here; send {expected}")


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
