"""The app with fixed test tokens, for the suites about what a token may do (SMART
scopes enforced on the API): tokens map to `Access` values through an injected
authenticator, and the seed resources are written with an all-access token."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from fhirserver.app import create_app
from fhirserver.auth.access import Access
from fhirserver.auth.authenticate import Authenticator
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.scopes import parse_scopes
from fhirserver.config import Settings
from fhirserver.storage.base import Store

FHIR_JSON = "application/fhir+json"
ADMIN = "admin"


def access(scopes: str, patient: str | None = None, user: str | None = None) -> Access:
    return Access(client_id="app", scopes=parse_scopes(scopes), patient=patient, user=user)


def authenticator(tokens: Mapping[str, Access]) -> Authenticator:
    """Tokens by their text; `admin` may do everything."""

    async def authenticate(token: str) -> Access:
        if token == ADMIN:
            return Access.everything()
        if token not in tokens:
            raise InvalidToken("the token is not known")
        return tokens[token]

    return authenticate


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def token_client(
    settings: Settings, store: Store, tokens: Mapping[str, Access], seed: list[dict[str, Any]]
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of the app on `store`, the `seed` resources written."""
    app = create_app(settings, store=store, authenticator=authenticator(tokens))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as client:
            for resource in seed:
                path = f"/{resource['resourceType']}/{resource['id']}"
                answer = await client.put(path, json=resource, headers=bearer(ADMIN))
                assert answer.status_code == 201, answer.text
            yield client
