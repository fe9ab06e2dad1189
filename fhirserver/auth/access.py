"""The `Access` value: who is asking, for which patient, with which scopes.

The REST layer turns a bearer token into one `Access` and passes it with every
interaction (DESIGN.md "Authorization"); `fhirserver.auth.policy` answers every
question about it. It holds no secret: the token itself never gets this far.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhirserver.auth.scopes import Scopes, parse_scopes


@dataclass(frozen=True)
class Access:
    """What one request may do, as its token (or the server's mode) says.

    `user` is the `fhirUser` reference (`Practitioner/123`, `Patient/7`, ...);
    `patient` and `encounter` are the launch context's ids (SMART "Launch context
    arrives with your access_token"); `subject` is the token's `sub`, the user or, for
    a backend service, the client itself.
    """

    client_id: str | None
    scopes: Scopes
    subject: str | None = None
    user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    token_id: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def everything(cls) -> Access:
        """Authorization off: every interaction on every type, as a system client
        would have with `system/*.cruds`, so the policy needs no special case."""
        return cls(client_id=None, scopes=parse_scopes("system/*.cruds"))
