"""Backend services at the token endpoint over HTTP (SMART App Launch 2.2
backend-services.html and client-confidential-asymmetric.html; RFC 7523 section 3;
RFC 6749 section 4.4 and 2.3.1): client_credentials with private_key_jwt signed
RS384 or ES384 (good, replayed jti, expired, wrong key, wrong aud, keys from a JWKS
URL) and with a client secret (client_secret_basic and client_secret_post)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey, RSAKey

from fhirserver.auth import registry
from fhirserver.auth.server import AuthServer, JwksUnavailable
from tests.auth.server.smart_helpers import (
    FORM,
    assertion,
    audit_events,
    backend_form,
    ec_key,
    key_client,
    public_app,
    rsa_key,
    secret_client,
    verified_claims,
)


@pytest.fixture(params=["RS384", "ES384"])
def key(request: pytest.FixtureRequest) -> RSAKey | ECKey:
    return rsa_key("k1") if request.param == "RS384" else ec_key("k1")


async def token(http: httpx.AsyncClient, form: dict[str, str], **kw: Any) -> httpx.Response:
    return await http.post(
        "/auth/token", data=form, headers={**FORM, **kw.pop("headers", {})}, **kw
    )


async def test_a_good_assertion_gets_a_system_token(
    http: httpx.AsyncClient, auth_server: AuthServer, key: RSAKey | ECKey
) -> None:
    await key_client(auth_server.store, "svc", key, "system/*.rs system/Observation.c")
    signed = assertion(key, "svc", auth_server.urls.token, auth_server.clock())
    answer = await token(http, backend_form(signed, "system/Patient.rs system/Observation.cruds"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # Never more than registered: Observation.cruds is cut to what svc may have.
    assert body["scope"] == "system/Patient.rs system/Observation.rs system/Observation.c"
    assert "refresh_token" not in body and "id_token" not in body and "patient" not in body
    claims = await verified_claims(http, body["access_token"])
    assert claims["sub"] == claims["client_id"] == "svc"
    [event] = await audit_events(auth_server.store)
    assert event["outcome"] == "0" and event["agent"][0]["requestor"] is True


async def test_a_replayed_jti_is_refused(
    http: httpx.AsyncClient, auth_server: AuthServer, key: RSAKey | ECKey
) -> None:
    await key_client(auth_server.store, "svc", key)
    signed = assertion(key, "svc", auth_server.urls.token, auth_server.clock(), jti="once")
    assert (await token(http, backend_form(signed))).status_code == 200
    replay = await token(http, backend_form(signed))
    assert replay.status_code == 401 and replay.json() == {
        "error": "invalid_client",
        "error_description": "jti already used",
    }
    # The same jti in a new assertion is still a replay.
    fresh = assertion(key, "svc", auth_server.urls.token, auth_server.clock(), jti="once")
    assert (await token(http, backend_form(fresh))).status_code == 401


@pytest.mark.parametrize(
    ("shift", "lifetime", "why"),
    [
        (timedelta(minutes=-10), timedelta(minutes=4), "expired"),
        (timedelta(0), timedelta(minutes=30), "more than five minutes"),
    ],
)
async def test_expired_or_too_long_lived_assertions_are_refused(
    http: httpx.AsyncClient,
    auth_server: AuthServer,
    key: RSAKey | ECKey,
    shift: timedelta,
    lifetime: timedelta,
    why: str,
) -> None:
    await key_client(auth_server.store, "svc", key)
    signed = assertion(
        key, "svc", auth_server.urls.token, auth_server.clock() + shift, lifetime=lifetime
    )
    refused = await token(http, backend_form(signed))
    assert refused.status_code == 401 and why in refused.json()["error_description"]


async def test_a_key_that_is_not_registered_is_refused(
    http: httpx.AsyncClient, auth_server: AuthServer, key: RSAKey | ECKey
) -> None:
    await key_client(auth_server.store, "svc", key)
    impostor = rsa_key("k1") if isinstance(key, RSAKey) else ec_key("k1")
    signed = assertion(impostor, "svc", auth_server.urls.token, auth_server.clock())
    refused = await token(http, backend_form(signed))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert refused.json()["error_description"] == "signature does not verify"


@pytest.mark.parametrize(
    "audience", ["http://127.0.0.1:8080/fhir", "https://elsewhere.example/token"]
)
async def test_an_assertion_for_another_audience_is_refused(
    http: httpx.AsyncClient, auth_server: AuthServer, key: RSAKey | ECKey, audience: str
) -> None:
    await key_client(auth_server.store, "svc", key)
    signed = assertion(key, "svc", audience, auth_server.clock())
    refused = await token(http, backend_form(signed))
    assert refused.status_code == 401
    assert refused.json()["error_description"] == "aud is not this token endpoint"


async def test_keys_from_a_registered_jwks_url(
    smart_app: Any, http: httpx.AsyncClient, auth_server: AuthServer, key: RSAKey | ECKey
) -> None:
    fetched: list[str] = []

    async def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        if url.endswith("/down"):
            raise JwksUnavailable("the JWKS URL cannot be reached")
        return {"keys": [key.as_dict(private=False)]}

    smart_app.state.auth_server = dataclasses.replace(auth_server, fetch_jwks=fetch)
    for client_id, url in (
        ("svc", "https://svc.example/jwks"),
        ("gone", "https://svc.example/down"),
    ):
        await registry.put_client(
            auth_server.store, registry.Client(client_id, "asymmetric", "system/*.rs", jwks_url=url)
        )
    ok = await token(
        http, backend_form(assertion(key, "svc", auth_server.urls.token, auth_server.clock()))
    )
    assert ok.status_code == 200 and fetched == ["https://svc.example/jwks"]
    down = await token(
        http, backend_form(assertion(key, "gone", auth_server.urls.token, auth_server.clock()))
    )
    assert down.status_code == 401 and "unavailable" in down.json()["error_description"]


async def test_client_secret_basic_and_post(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    secret = await secret_client(auth_server.store, "feed", "system/*.rs")
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs"}
    basic = await token(http, form, auth=("feed", secret))
    assert basic.status_code == 200 and basic.json()["scope"] == "system/Patient.rs"
    posted = await token(http, {**form, "client_id": "feed", "client_secret": secret})
    assert posted.status_code == 200
    wrong = await token(http, form, auth=("feed", secret + "x"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    both = await token(http, {**form, "client_secret": secret}, auth=("feed", secret))
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"


async def test_a_client_uses_the_method_it_registered(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    key = rsa_key("k1")
    await key_client(auth_server.store, "svc", key)
    secret = await secret_client(auth_server.store, "feed", "system/*.rs")
    form = {"grant_type": "client_credentials", "scope": "system/*.rs"}
    # An asymmetric client with a secret, a symmetric one with an assertion, a public app.
    assert (
        await token(http, {**form, "client_id": "svc", "client_secret": secret})
    ).status_code == 401
    signed = assertion(key, "feed", auth_server.urls.token, auth_server.clock())
    assert (await token(http, backend_form(signed))).status_code == 401
    await public_app(auth_server.store)
    public = await token(http, {**form, "client_id": "app"})
    assert public.status_code == 400 and public.json()["error"] == "unauthorized_client"


async def test_scopes_outside_system_or_the_registration_are_invalid(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    secret = await secret_client(auth_server.store, "feed", "system/Patient.rs patient/*.rs")
    for scope in ("patient/*.rs", "system/Observation.rs", "openid fhirUser"):
        answer = await token(
            http, {"grant_type": "client_credentials", "scope": scope}, auth=("feed", secret)
        )
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_scope", scope
    missing = await token(http, {"grant_type": "client_credentials"}, auth=("feed", secret))
    assert missing.json()["error"] == "invalid_request"


async def test_refused_requests_are_audited(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    await secret_client(auth_server.store, "feed", "system/*.rs")
    await token(
        http, {"grant_type": "client_credentials", "scope": "system/*.rs"}, auth=("feed", "guess")
    )
    [event] = await audit_events(auth_server.store)
    assert event["outcome"] == "4" and "invalid_client" in event["outcomeDesc"]
    assert event["agent"][0]["who"]["identifier"]["value"] == "feed"
    assert "guess" not in str(event)


async def test_the_token_endpoint_is_rate_limited_per_address(
    http: httpx.AsyncClient, auth_server: AuthServer
) -> None:
    form = {"grant_type": "client_credentials", "client_id": "nobody", "scope": "system/*.rs"}
    statuses = [(await token(http, form)).status_code for _ in range(25)]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429
    limited = await token(http, form)
    assert (
        limited.json()["error"] == "temporarily_unavailable"
        and int(limited.headers["retry-after"]) >= 1
    )
