"""The token endpoint's authorization_code and refresh_token grants, and revocation
and introspection, over HTTP (RFC 6749 sections 4.1.3, 5 and 6; RFC 7636 section 4.6
PKCE S256; RFC 7009; RFC 7662; SMART App Launch 2.2 app-launch.html "Obtain access
token", "Refresh access token"). The authorization step is simulated by saving the
grant the way /auth/authorize does (`registry.save_code`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirserver.auth import registry
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.passwords import ScryptParameters, hash_password
from fhirserver.auth.server import AuthServer
from tests.auth.server.smart_helpers import (
    FORM,
    REDIRECT,
    audit_events,
    pkce_pair,
    public_app,
    secret_client,
    verified_claims,
)
from tests.clock import MovableClock


async def authorized(
    server: AuthServer,
    challenge: str,
    *,
    client_id: str = "app",
    scopes: str = "openid fhirUser launch/patient offline_access patient/*.rs",
    code: str = "the-code",
) -> str:
    grant = registry.AuthorizationGrant(
        client_id=client_id,
        redirect_uri=REDIRECT,
        scopes=scopes,
        code_challenge=challenge,
        username="alice",
        fhir_user="Patient/123",
        patient="123",
        nonce="nonce-1",
    )
    # Codes are issued to registered users only; a refresh checks the user is still there.
    hashed = hash_password("a long enough password", ScryptParameters(log2_n=4))
    await registry.put_user(server.store, registry.User("alice", "Patient/123", hashed))
    await registry.save_code(server.store, code, grant, server.clock() + server.code_lifetime)
    return code


def exchange(code: str, verifier: str, client_id: str = "app", **extra: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_id": client_id,
        **extra,
    }


async def post(
    http: httpx.AsyncClient, path: str, form: dict[str, str], **kw: Any
) -> httpx.Response:
    return await http.post(path, data=form, headers={**FORM, **kw.pop("headers", {})}, **kw)


async def test_code_exchange_gives_the_token_the_app_asked_for(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    answer = await post(http, "/auth/token", exchange(code, verifier))
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert set(body["scope"].split()) == {
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/*.rs",
    }
    assert body["patient"] == "123" and body["refresh_token"]
    claims = await verified_claims(http, body["access_token"])
    assert claims["aud"] == auth_server.urls.fhir_base == "http://127.0.0.1:8080/fhir"
    assert claims["iss"] == auth_server.urls.issuer
    assert claims["patient"] == "123" and claims["fhirUser"] == "Patient/123"
    id_token = await verified_claims(http, body["id_token"])
    assert id_token["aud"] == "app" and id_token["nonce"] == "nonce-1"
    assert id_token["fhirUser"] == "Patient/123" and id_token["sub"] == "alice"
    # The server's own Authenticator accepts it.
    access = await http._transport.app.state.authenticator(body["access_token"])  # type: ignore[attr-defined]
    assert access.patient == "123" and access.client_id == "app"


async def test_granted_scopes_never_exceed_the_registration(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store, scopes="launch/patient patient/Observation.rs")
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge, scopes="patient/*.cruds openid offline_access")
    body = (await post(http, "/auth/token", exchange(code, verifier))).json()
    assert body["scope"] == "patient/Observation.rs"
    assert "refresh_token" not in body and "id_token" not in body


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"code_verifier": "x" * 43}, "code_verifier"),
        ({"code_verifier": ""}, "code_verifier"),
        ({"redirect_uri": REDIRECT + "/other"}, "redirect_uri"),
        ({"client_id": "other-app"}, "another client"),
    ],
)
async def test_a_mismatch_is_invalid_grant_and_spends_the_code(
    http: httpx.AsyncClient, auth_server: AuthServer, change: dict[str, str], why: str
) -> None:
    await public_app(auth_server.store)
    await public_app(auth_server.store, "other-app")
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    refused = await post(http, "/auth/token", {**exchange(code, verifier), **change})
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant" and why in refused.json()["error_description"]
    assert refused.headers["cache-control"] == "no-store"
    # The right request afterwards finds the code spent (RFC 6749 section 4.1.2).
    again = await post(http, "/auth/token", exchange(code, verifier))
    assert again.json()["error"] == "invalid_grant"


async def test_a_code_works_once(http: httpx.AsyncClient, auth_server: AuthServer) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    assert (await post(http, "/auth/token", exchange(code, verifier))).status_code == 200
    reused = await post(http, "/auth/token", exchange(code, verifier))
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


async def test_a_code_expires_after_a_minute(
    http: httpx.AsyncClient, auth_server: AuthServer, clock: MovableClock
) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    clock.move_to(clock() + timedelta(seconds=61))
    late = await post(http, "/auth/token", exchange(code, verifier))
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


async def test_a_confidential_client_must_authenticate_for_its_code(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    secret = await secret_client(auth_server.store, "conf", "patient/*.rs launch/patient")
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge, client_id="conf", scopes="patient/*.rs")
    bare = await post(http, "/auth/token", exchange(code, verifier, client_id="conf"))
    assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"
    code = await authorized(
        auth_server, challenge, client_id="conf", code="c2", scopes="patient/*.rs"
    )
    ok = await post(
        http, "/auth/token", exchange(code, verifier, client_id="conf"), auth=("conf", secret)
    )
    assert ok.status_code == 200 and ok.json()["scope"] == "patient/*.rs"


async def test_refresh_rotates_and_the_old_token_is_refused(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    first = (await post(http, "/auth/token", exchange(code, verifier))).json()
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": "app",
    }
    second = await post(http, "/auth/token", refresh)
    assert second.status_code == 200, second.text
    renewed = second.json()
    assert renewed["refresh_token"] != first["refresh_token"]
    assert renewed["access_token"] != first["access_token"] and renewed["patient"] == "123"
    reused = await post(http, "/auth/token", refresh)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # A narrower scope may be asked for; a broader one is cut back to the grant.
    narrower = await post(
        http,
        "/auth/token",
        {
            **refresh,
            "refresh_token": renewed["refresh_token"],
            "scope": "patient/Patient.r offline_access user/*.cruds",
        },
    )
    assert narrower.json()["scope"] == "patient/Patient.r offline_access"


async def test_another_client_cannot_use_a_refresh_token(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    await public_app(auth_server.store, "other-app")
    verifier, challenge = pkce_pair()
    first = (
        await post(
            http, "/auth/token", exchange(await authorized(auth_server, challenge), verifier)
        )
    ).json()
    stolen = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "client_id": "other-app",
    }
    refused = await post(http, "/auth/token", stolen)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


async def test_revoked_access_token_is_inactive_and_refused(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    secret = await secret_client(auth_server.store, "rs", "system/*.rs")
    verifier, challenge = pkce_pair()
    body = (
        await post(
            http, "/auth/token", exchange(await authorized(auth_server, challenge), verifier)
        )
    ).json()
    token = body["access_token"]
    live = await post(http, "/auth/introspect", {"token": token}, auth=("rs", secret))
    assert live.json()["active"] is True and live.json()["patient"] == "123"
    assert live.json()["client_id"] == "app" and live.json()["scope"] == body["scope"]
    revoked = await post(http, "/auth/revoke", {"token": token, "client_id": "app"})
    assert revoked.status_code == 200
    dead = await post(http, "/auth/introspect", {"token": token}, auth=("rs", secret))
    assert dead.json() == {"active": False}
    authenticator = http._transport.app.state.authenticator  # type: ignore[attr-defined]
    with pytest.raises(InvalidToken, match="revoked"):
        await authenticator(token)


async def test_revoked_refresh_token_no_longer_refreshes(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    body = (
        await post(
            http, "/auth/token", exchange(await authorized(auth_server, challenge), verifier)
        )
    ).json()
    assert (
        await post(http, "/auth/revoke", {"token": body["refresh_token"], "client_id": "app"})
    ).status_code == 200
    refresh = {
        "grant_type": "refresh_token",
        "refresh_token": body["refresh_token"],
        "client_id": "app",
    }
    assert (await post(http, "/auth/token", refresh)).json()["error"] == "invalid_grant"


async def test_revocation_of_another_clients_token_changes_nothing(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    await public_app(auth_server.store, "other-app")
    verifier, challenge = pkce_pair()
    body = (
        await post(
            http, "/auth/token", exchange(await authorized(auth_server, challenge), verifier)
        )
    ).json()
    answer = await post(
        http, "/auth/revoke", {"token": body["access_token"], "client_id": "other-app"}
    )
    assert answer.status_code == 200
    access = await http._transport.app.state.authenticator(body["access_token"])  # type: ignore[attr-defined]
    assert access.client_id == "app"
    # Unknown tokens are 200 too (RFC 7009 section 2.2).
    assert (
        await post(http, "/auth/revoke", {"token": "nonsense", "client_id": "app"})
    ).status_code == 200


async def test_introspection_needs_a_credential(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await public_app(auth_server.store)
    anonymous = await post(http, "/auth/introspect", {"token": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    public = await post(http, "/auth/introspect", {"token": "x", "client_id": "app"})
    assert public.status_code == 401
    verifier, challenge = pkce_pair()
    body = (
        await post(
            http, "/auth/token", exchange(await authorized(auth_server, challenge), verifier)
        )
    ).json()
    # A valid access token is a credential; asking about garbage says only "inactive".
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    answer = await post(http, "/auth/introspect", {"token": "garbage"}, headers=bearer)
    assert answer.status_code == 200 and answer.json() == {"active": False}
    refresh = await post(http, "/auth/introspect", {"token": body["refresh_token"]}, headers=bearer)
    assert refresh.json()["active"] is True and refresh.json()["client_id"] == "app"


async def test_each_token_issued_and_refused_is_audited_without_the_token(
    http: httpx.AsyncClient, auth_server: AuthServer, smart_app: Any
) -> None:
    await public_app(auth_server.store)
    verifier, challenge = pkce_pair()
    code = await authorized(auth_server, challenge)
    body = (await post(http, "/auth/token", exchange(code, verifier))).json()
    await post(http, "/auth/token", exchange(code, verifier))
    issued, refused = await audit_events(auth_server.store)
    assert issued["outcome"] == "0" and refused["outcome"] == "4"
    assert issued["type"]["code"] == "110114" and issued["action"] == "E"
    assert issued["agent"][0]["who"]["identifier"]["value"] == "app"
    assert issued["agent"][1]["who"] == {"reference": "Patient/123"}
    claims = await verified_claims(http, body["access_token"])
    assert issued["entity"][0]["what"]["identifier"]["value"] == claims["jti"]
    assert "invalid_grant" in refused["outcomeDesc"]
    text = str([issued, refused])
    assert body["access_token"] not in text and body["refresh_token"] not in text
    assert code not in text and verifier not in text


async def test_oauth_error_shapes(http: httpx.AsyncClient, auth_server: AuthServer) -> None:
    unsupported = await post(http, "/auth/token", {"grant_type": "password"})
    assert (
        unsupported.status_code == 400 and unsupported.json()["error"] == "unsupported_grant_type"
    )
    repeated = await http.post(
        "/auth/token", content=b"grant_type=client_credentials&grant_type=password", headers=FORM
    )
    assert repeated.json()["error"] == "invalid_request"
    json_body = await http.post("/auth/token", json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"
    unknown = await post(
        http, "/auth/token", {"grant_type": "client_credentials", "client_id": "nobody"}
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    assert (await http.get("/auth/token")).status_code == 405
