"""Responses carrying FHIR JSON: pretty printing, `_summary` / `_elements`, Prefer."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.cpu import CpuPool, work
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


def render_resource(body: bytes, summary: str | None, elements: str | None, pretty: bool) -> bytes:
    """The stored JSON, cut down by `_summary` or `_elements`, and pretty printed, as
    asked; a plain function of bytes, so a worker process can run it for a large body."""
    if summary is None and elements is None:
        return codec.dumps(codec.loads(body), pretty=True) if pretty else body
    resource = codec.load_object(body)
    if summary is not None:
        if summary not in SUMMARY_MODES or summary == "count":
            raise BadRequest(f"_summary={summary!r} is not valid on a read", expression="_summary")
        shaped = summarize(resource, summary)
    else:
        assert elements is not None
        shaped = select_elements(resource, [e.strip() for e in elements.split(",") if e.strip()])
    return codec.dumps(shaped, pretty=pretty)


async def resource_response(
    request: Request,
    body: bytes | None,
    fmt: Format,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A stored resource as the request asks; rendered in a worker process when large
    (issue 20: no request holds the event loop)."""
    if body is None:
        return Response(status_code=status, headers=headers)
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    if summary is not None or elements is not None or fmt.pretty:
        cpu: CpuPool | None = request.app.state.writes.cpu
        body = await work(cpu, render_resource, body, summary, elements, fmt.pretty, cost=len(body))
    return Response(body, status_code=status, headers=headers, media_type=fmt.media_type)


async def write_response(
    request: Request,
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
    # The written resource as stored: _summary / _elements shape reads, not writes.
    if fmt.pretty:
        cpu: CpuPool | None = request.app.state.writes.cpu
        body = await work(cpu, render_resource, body, None, None, True, cost=len(body))
    return Response(body, status_code=status, headers=headers, media_type=fmt.media_type)
