"""One exception hierarchy for everything a client can get wrong or be refused.

The REST layer turns these into an OperationOutcome in exactly one place
(`fhirserver.rest.errors`); no other layer knows about HTTP responses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, IssueType code, text, and the FHIRPath it is about."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: str | None = None


class FHIRError(Exception):
    status: int = 400
    code: str = "invalid"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | None = None,
        issues: list[Issue] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        if status is not None:
            self.status = status
        self.issues = issues or [Issue(diagnostics, self.code, "error", expression)]
        # HTTP headers the refusal needs, such as Allow on a 405 or Retry-After on a 503.
        self.headers = headers or {}


class BadRequest(FHIRError):
    status, code = 400, "invalid"


class NotSupported(FHIRError):
    status, code = 400, "not-supported"


class Forbidden(FHIRError):
    """The request is understood and authenticated, but its access does not cover it."""

    status, code = 403, "forbidden"


class NotFound(FHIRError):
    status, code = 404, "not-found"


class MethodNotAllowed(FHIRError):
    status, code = 405, "not-supported"


class NotAcceptable(FHIRError):
    status, code = 406, "not-supported"


class Conflict(FHIRError):
    status, code = 409, "conflict"


class Gone(FHIRError):
    status, code = 410, "deleted"


class PreconditionFailed(FHIRError):
    status, code = 412, "conflict"


class PayloadTooLarge(FHIRError):
    status, code = 413, "too-costly"


class TooCostly(FHIRError):
    """Work the server stopped to protect itself: a search past its time limit. 503 as
    the status (the server declines to finish; 4xx would blame a valid request), and
    the IssueType that says why (`too-costly`), as the Microsoft and b.well servers
    turned their 500s on a database timeout into."""

    status, code = 503, "too-costly"


class UnsupportedMediaType(FHIRError):
    status, code = 415, "not-supported"


class Unprocessable(FHIRError):
    status, code = 422, "processing"


class Unavailable(FHIRError):
    status, code = 503, "transient"


class Contention(Unavailable):
    """A unit of work lost a race with a concurrent one (a write conflict on MongoDB):
    nothing of it was written, and running the whole unit again can succeed
    (`storage.retry.run_unit` does, for a while; past that the client gets 503)."""

    def __init__(self, diagnostics: str = "The database was busy; try again") -> None:
        super().__init__(diagnostics, headers={"Retry-After": "1"})
