"""The one place where errors become OperationOutcome responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fhirserver.connections import client_gone
from fhirserver.errors import FHIRError, Issue
from fhirserver.resources import codec

logger = logging.getLogger("fhirserver")
FHIR_JSON = "application/fhir+json"
_STATUS_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": issue.severity,
                "code": issue.code,
                "diagnostics": issue.diagnostics,
                **({"expression": [issue.expression]} if issue.expression else {}),
            }
            for issue in issues
        ],
    }


def outcome_response(
    status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        codec.dumps(operation_outcome(issues)),
        status_code=status,
        headers=headers,
        media_type=FHIR_JSON,
    )


async def fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FHIRError)
    return outcome_response(exc.status, exc.issues, exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, "processing")
    return outcome_response(exc.status_code, [Issue(str(exc.detail), code)], exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # The cause goes to the server log; the client gets no stack trace or internals.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return outcome_response(500, [Issue("Internal server error", "exception", "fatal")])


async def client_disconnected(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer: one line in the log, no traceback (issue 20 finding 5).
    client_gone(dict(request.scope))
    return Response(status_code=400)


EXCEPTION_HANDLERS = {
    ClientDisconnect: client_disconnected,
    FHIRError: fhir_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
