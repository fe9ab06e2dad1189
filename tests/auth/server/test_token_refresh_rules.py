"""What a refresh token may still do (RFC 6749 section 6; SMART App Launch 2.2
app-launch.html "Refresh access token"): nothing once its user is removed, and a
narrower token asked for does not cost the app its refresh grant. Found in review;
each test failed before its fix."""

from __future__ import annotations

import httpx

from fhirserver.auth import registry
from fhirserver.auth.server import AuthServer
from tests.auth.server.smart_helpers import pkce_pair, public_app
from tests.auth.server.test_token_code import authorized, exchange, post


async def _first_tokens(http: httpx.AsyncClient, auth_server: AuthServer) -> dict[str, str]:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    tokens: dict[str, str] = (await post(http, "/auth/token", exchange(code, verifier))).json()
    return tokens


def _refresh(token: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": token, "client_id": "app", **extra}


async def test_a_removed_users_refresh_token_no_longer_works(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    first = await _first_tokens(http, auth_server)
    assert await registry.remove_user(auth_server.store, "alice")
    answer = await post(http, "/auth/token", _refresh(first["refresh_token"]))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert "access_token" not in answer.json()


async def test_a_narrower_refresh_keeps_the_refresh_grant(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    first = await _first_tokens(http, auth_server)
    narrower = await post(
        http, "/auth/token", _refresh(first["refresh_token"], scope="patient/Patient.rs")
    )
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "patient/Patient.rs"
    renewed = narrower.json()["refresh_token"]
    again = await post(http, "/auth/token", _refresh(renewed))
    assert again.status_code == 200
    assert "patient/*.rs" in again.json()["scope"]


async def test_an_access_token_introspects_only_its_own_clients_tokens(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    mine = await _first_tokens(http, auth_server)
    await public_app(auth_server.store, "other-app")
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge, client_id="other-app", code="c-other")
    other = (
        await post(http, "/auth/token", exchange(code, verifier, client_id="other-app"))
    ).json()
    bearer = {"Authorization": f"Bearer {other['access_token']}"}
    theirs = await post(http, "/auth/introspect", {"token": mine["refresh_token"]}, headers=bearer)
    assert theirs.json() == {"active": False}
    own = await post(http, "/auth/introspect", {"token": other["refresh_token"]}, headers=bearer)
    assert own.json()["active"] is True
