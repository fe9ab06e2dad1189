"""The `Authenticator` of `smart` mode (auth/authenticate.py): a bearer token is one
of this server's access tokens, signed with a key that verifies now (grace period
included), for this FHIR server (`aud` its base URL), unexpired and not revoked."""

from __future__ import annotations

from fhirserver.auth.access import Access
from fhirserver.auth.authenticate import Authenticator
from fhirserver.auth.introspection import access_of
from fhirserver.auth.server import AuthServer


def smart_authenticator(server: AuthServer) -> Authenticator:
    async def authenticate(token: str) -> Access:
        return await access_of(server, token)

    return authenticate
