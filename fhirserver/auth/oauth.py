"""OAuth 2.0 errors as the token, introspection and revocation endpoints answer them
(RFC 6749 section 5.2): a JSON object with `error` and a fixed `error_description`,
never quoting what the client sent, a token, a key or a secret."""

from __future__ import annotations

from typing import Any


class OAuthError(Exception):
    """A refused OAuth request. `client_id` is the client, when it was identified
    (for the audit trail); `status` 400, or 401 for `invalid_client`, 429 when slowed."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        client_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.client_id = client_id
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def invalid_request(description: str, client_id: str | None = None) -> OAuthError:
    return OAuthError("invalid_request", description, client_id=client_id)


def invalid_client(
    description: str, client_id: str | None = None, basic: bool = False
) -> OAuthError:
    # RFC 6749 section 5.2: 401, with WWW-Authenticate when the client tried the header.
    headers = {"WWW-Authenticate": 'Basic realm="fhirserver"'} if basic else None
    return OAuthError(
        "invalid_client", description, status=401, client_id=client_id, headers=headers
    )


def invalid_grant(description: str, client_id: str | None = None) -> OAuthError:
    return OAuthError("invalid_grant", description, client_id=client_id)
