"""Responses carrying FHIR JSON: pretty printing, `_summary` / `_elements`, Prefer."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.errors import BadRequest, Issue
from fhirserver.resources import codec
from fhirserver.resources.elements import SUMMARY_MODES, select_elements, summarize
from fhirserver.rest.errors import operation_outcome
from fhirserver.rest.negotiation import Format
from fhirserver.search.result_params import FORMAT_PARAMS

# Parameters about the shape of the answer, never search or history criteria.
SHAPE_PARAMS = frozenset({*FORMAT_PARAMS, "_summary", "_elements"})


def fhir_response(
    content: bytes | dict[str, Any] | None,
    fmt: Format,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    if content is None:
        return Response(status_code=status, headers=headers)
    if isinstance(content, dict):
        body = codec.dumps(content, pretty=fmt.pretty)
    else:
        body = codec.dumps(codec.loads(content), pretty=True) if fmt.pretty else content
    return Response(body, status_code=status, headers=headers, media_type=fmt.media_type)


def shaped_resource(request: Request, body: bytes) -> bytes | dict[str, Any]:
    """The stored JSON, cut down by `_summary` or `_elements` if the request asks."""
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    if summary is None and elements is None:
        return body
    resource = codec.load_object(body)
    if summary is not None:
        if summary not in SUMMARY_MODES or summary == "count":
            raise BadRequest(f"_summary={summary!r} is not valid on a read", expression="_summary")
        return summarize(resource, summary)
    assert elements is not None
    return select_elements(resource, [e.strip() for e in elements.split(",") if e.strip()])


def write_response(
    preference: str,
    body: bytes | None,
    fmt: Format,
    status: int,
    headers: dict[str, str],
    message: str,
) -> Response:
    """Answer a write as the client's Prefer: return= asks (R4 http.html#ops)."""
    if preference == "minimal":
        return fhir_response(None, fmt, status, headers)
    if preference == "OperationOutcome" or body is None:
        outcome = operation_outcome([Issue(message, "informational", "information")])
        return fhir_response(outcome, fmt, status, headers)
    return fhir_response(body, fmt, status, headers)
