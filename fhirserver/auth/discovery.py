"""`[base]/.well-known/smart-configuration` (SMART App Launch 2.2 conformance.html):
what the authorization server supports, said only for what works.

In `smart` mode it describes the built-in server. In `external` mode it points at the
outside identity provider: its issuer and JWKS from the settings, and the endpoints
from its OpenID configuration when the caller has it (`issuer_metadata`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhirserver.auth.assertions import ALGORITHMS
from fhirserver.auth.keys import ALGORITHM
from fhirserver.auth.urls import AuthUrls
from fhirserver.config import Settings

# conformance.html "Capabilities", the ones the built-in server implements.
SMART_CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
)
EXTERNAL_CAPABILITIES = ("permission-patient", "permission-user", "permission-v1", "permission-v2")
SCOPES_SUPPORTED = (
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "user/*.cruds",
    "system/*.cruds",
    "patient/*.rs",
    "user/*.rs",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
    "patient/*.write",
    "user/*.write",
    "system/*.write",
)
GRANT_TYPES = ("authorization_code", "client_credentials", "refresh_token")
AUTH_METHODS = ("private_key_jwt", "client_secret_basic", "client_secret_post")
# The endpoints an external issuer's OpenID configuration may name for us to pass on.
_EXTERNAL_ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "management_endpoint",
    "registration_endpoint",
    "grant_types_supported",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "code_challenge_methods_supported",
)


def smart_configuration(urls: AuthUrls) -> dict[str, Any]:
    """The built-in server's document."""
    return {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "id_token_signing_alg_values_supported": [ALGORITHM],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(SMART_CAPABILITIES),
    }


def external_configuration(
    settings: Settings, issuer_metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The outside issuer's endpoints, as far as they are known."""
    metadata = issuer_metadata or {}
    document: dict[str, Any] = {
        "issuer": settings.auth_issuer or metadata.get("issuer"),
        "jwks_uri": settings.auth_jwks_url or metadata.get("jwks_uri"),
        "grant_types_supported": list(GRANT_TYPES),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(EXTERNAL_CAPABILITIES),
    }
    document.update({name: metadata[name] for name in _EXTERNAL_ENDPOINTS if name in metadata})
    if settings.auth_introspection_url:
        document["introspection_endpoint"] = settings.auth_introspection_url
    return {name: value for name, value in document.items() if value is not None}
