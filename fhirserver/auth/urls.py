"""Where the built-in authorization server's endpoints are: under `/auth`, beside the
FHIR base (not under it, so no FHIR path can ever shadow one), on the server's origin.

Tokens name these URLs (the issuer, a client assertion's `aud` the token URL), so they
come from the settings (`public_url` behind a proxy), never from a request's Host.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirserver.config import Settings

AUTH_PATH = "/auth"
WELL_KNOWN = "/.well-known/smart-configuration"


@dataclass(frozen=True)
class AuthUrls:
    issuer: str
    fhir_base: str
    authorize: str
    token: str
    introspect: str
    revoke: str
    jwks: str
    launch: str

    @property
    def smart_configuration(self) -> str:
        return self.fhir_base + WELL_KNOWN


def auth_urls(settings: Settings) -> AuthUrls:
    """The built-in server's URLs. The issuer is the `/auth` URL itself."""
    origin = settings.origin
    issuer = origin + AUTH_PATH
    return AuthUrls(
        issuer=issuer,
        fhir_base=origin + settings.base_path,
        authorize=issuer + "/authorize",
        token=issuer + "/token",
        introspect=issuer + "/introspect",
        revoke=issuer + "/revoke",
        jwks=issuer + "/jwks",
        launch=issuer + "/launch",
    )
