"""The two refusals authorization raises, each carrying its OAuth error code.

`InvalidToken` is a FHIR error (a request to the FHIR API without a usable bearer
token): the REST layer's one error handler turns it into a 401 OperationOutcome with
the `WWW-Authenticate` header RFC 6750 section 3 asks for. `InvalidClient` is refused at
the token endpoint, which answers in OAuth's JSON shape (RFC 6749 section 5.2), not with
an OperationOutcome.

Reasons are fixed, human phrases chosen by this package: never a token, a key, a
secret or a library's message (which may quote input). RFC 6750 section 3 also forbids
`"` and `\\` in `error_description`, which fixed phrases never contain.
"""

from __future__ import annotations

from fhirserver.errors import FHIRError


class InvalidToken(FHIRError):
    """RFC 6750 section 3.1 `invalid_token`: expired, revoked, malformed, or not ours."""

    # IssueType "login": the client needs to (re-)authenticate.
    status, code = 401, "login"
    error = "invalid_token"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"Invalid access token: {reason}",
            headers={
                "WWW-Authenticate": (f'Bearer error="{self.error}", error_description="{reason}"')
            },
        )


class MissingToken(FHIRError):
    """RFC 6750 section 3.1: a request with no authentication at all gets the challenge
    without an error code."""

    status, code = 401, "login"

    def __init__(self) -> None:
        super().__init__(
            "This server needs an access token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": 'Bearer realm="fhir"'},
        )


class InvalidClient(Exception):
    """RFC 6749 section 5.2 `invalid_client`: client authentication failed."""

    error = "invalid_client"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self.error}: {reason}")
