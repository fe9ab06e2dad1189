"""External mode, opaque access tokens asked about at the identity provider: RFC 7662
section 2.1 (the request: `token`, `token_type_hint`, the caller authenticated with
HTTP Basic as RFC 6749 section 2.3.1 encodes it), section 2.2 (only `"active": true`
counts) and section 4 (caching answers: a revocation shows within a minute)."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external import ExternalAuthenticator, external_authenticator
from fhirserver.config import Settings
from fhirserver.errors import Unavailable
from tests.auth.external_idp import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    T0,
    FakeIdP,
    clock,
    http,
    idp,
    serving,
)
from tests.clock import MovableClock

__all__ = ["clock", "http", "idp"]


def settings_for(idp: FakeIdP, **changes: Any) -> Settings:
    chosen: dict[str, Any] = {
        "auth": "external",
        "auth_issuer": idp.url,
        "auth_introspection_client_id": CLIENT_ID,
        "auth_introspection_client_secret": CLIENT_SECRET,
    }
    return Settings(**{**chosen, **changes})


@pytest.fixture
async def authenticate(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> ExternalAuthenticator:
    return await external_authenticator(settings_for(idp), http, clock, AUDIENCE)


def active(idp: FakeIdP, **changes: Any) -> tuple[str, dict[str, Any]]:
    """An opaque token and the IdP's answer for it: active, for this server."""
    token = secrets.token_urlsafe(32)
    now = int(T0.timestamp())
    answer = {
        "active": True,
        "iss": idp.url,
        "aud": AUDIENCE,
        "client_id": "scheduler",
        "sub": "bob",
        "scope": "user/Appointment.cruds fhirUser",
        "fhirUser": "Practitioner/9",
        "token_type": "Bearer",
        "iat": now,
        "exp": now + 3600,
        "jti": "opaque-1",
    }
    answer.update(changes)
    idp.answers[token] = {name: value for name, value in answer.items() if value is not None}
    return token, answer


async def refused(authenticate: ExternalAuthenticator, token: str) -> str:
    with pytest.raises(InvalidToken) as error:
        await authenticate(token)
    return error.value.reason


async def test_an_active_opaque_token_grants_what_the_idp_says(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token, _ = active(idp)
    access = await authenticate(token)
    assert access.client_id == "scheduler"
    assert access.subject == "bob"
    assert access.user == "Practitioner/9"
    assert access.token_id == "opaque-1"
    assert access.expires_at == T0 + timedelta(hours=1)
    assert [str(p) for p in access.scopes.permissions] == ["user/Appointment.cruds"]
    # The request RFC 7662 section 2.1 describes (the Basic credentials were checked
    # by the IdP, their odd characters form-urlencoded first).
    assert idp.introspected == {"token": token, "token_type_hint": "access_token"}


async def test_the_endpoint_comes_from_discovery(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token, _ = active(idp)
    await authenticate(token)
    assert idp.requests["discovery"] == 1
    assert idp.requests["introspect"] == 1


async def test_an_inactive_token_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    assert await refused(authenticate, secrets.token_urlsafe(32)) == "not active"
    token, _ = active(idp, active="true")  # a string is not `true`
    assert await refused(authenticate, token) == "not active"


async def test_a_refresh_token_is_not_an_access_token(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token, _ = active(idp, token_type="refresh_token")
    assert await refused(authenticate, token) == "not an access token"


async def test_an_answer_for_another_audience_or_issuer_is_refused(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token, _ = active(idp, aud="https://other.example.org")
    assert await refused(authenticate, token) == "meant for another audience"
    token, _ = active(idp, iss="https://evil.example.com")
    assert await refused(authenticate, token) == "issued by another server"


async def test_an_answer_without_optional_claims_still_counts(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    """RFC 7662 section 2.2: only `active` is required."""
    token, _ = active(
        idp, iss=None, aud=None, exp=None, iat=None, jti=None, token_type=None, fhirUser=None
    )
    access = await authenticate(token)
    assert access.client_id == "scheduler"
    assert access.expires_at is None


async def test_an_active_answer_is_kept_a_minute_and_no_longer(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    token, _ = active(idp)
    await authenticate(token)
    clock.move_to(T0 + timedelta(seconds=59))
    await authenticate(token)
    assert idp.requests["introspect"] == 1
    # Revoked at the IdP: seen once the minute is over.
    del idp.answers[token]
    clock.move_to(T0 + timedelta(seconds=61))
    assert await refused(authenticate, token) == "not active"
    assert idp.requests["introspect"] == 2


async def test_an_answer_is_kept_no_longer_than_the_token_lives(
    idp: FakeIdP, authenticate: ExternalAuthenticator, clock: MovableClock
) -> None:
    token, _ = active(idp, exp=int(T0.timestamp()) + 10)
    await authenticate(token)
    clock.move_to(T0 + timedelta(seconds=11))
    await authenticate(token)  # within the leeway: asked again, still good
    assert idp.requests["introspect"] == 2
    clock.move_to(T0 + timedelta(seconds=45))
    assert await refused(authenticate, token) == "expired"


async def test_inactive_answers_are_not_kept(
    idp: FakeIdP, authenticate: ExternalAuthenticator
) -> None:
    token = secrets.token_urlsafe(32)
    assert await refused(authenticate, token) == "not active"
    # Activated at the IdP (a token issued a moment later): seen at once.
    idp.answers[token] = {"active": True, "scope": "system/*.rs", "client_id": "exporter"}
    assert (await authenticate(token)).client_id == "exporter"


async def test_wrong_credentials_at_the_idp_are_a_503_not_a_401(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    """The IdP refusing this server is the operator's problem, not the client's."""
    settings = settings_for(idp, auth_introspection_client_secret="wrong")
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    token, _ = active(idp)
    with pytest.raises(Unavailable) as error:
        await authenticate(token)
    assert error.value.status == 503
    assert not isinstance(error.value, InvalidToken)
    assert "wrong" not in str(error.value)


async def test_opaque_tokens_are_refused_without_an_introspection_endpoint(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    idp.with_introspection = False
    authenticate = await external_authenticator(settings_for(idp), http, clock, AUDIENCE)
    token, _ = active(idp)
    assert await refused(authenticate, token) == (
        "not a JWT, and opaque tokens cannot be checked here"
    )
    assert idp.requests["introspect"] == 0


async def test_a_discovered_endpoint_is_not_used_without_credentials(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    settings = Settings(auth="external", auth_issuer=idp.url)
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    token, _ = active(idp)
    assert await refused(authenticate, token) == (
        "not a JWT, and opaque tokens cannot be checked here"
    )
    assert idp.requests["introspect"] == 0


async def test_a_configured_endpoint_without_discovery(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    settings = Settings(
        auth="external",
        auth_jwks_url=f"{idp.url}/jwks",
        auth_introspection_url=f"{idp.url}/introspect",
        auth_introspection_client_id=CLIENT_ID,
        auth_introspection_client_secret=CLIENT_SECRET,
    )
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    token, _ = active(idp, iss="https://anyone.example.com")  # no issuer configured
    assert (await authenticate(token)).subject == "bob"
    assert idp.requests["discovery"] == 0


async def test_the_token_stays_out_of_logs_and_errors_when_the_idp_is_down(
    http: httpx.AsyncClient, clock: MovableClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(FakeIdP()) as idp:
        authenticate = await external_authenticator(settings_for(idp), http, clock, AUDIENCE)
        token, _ = active(idp)
    # The IdP is gone now.
    with caplog.at_level(logging.DEBUG, logger="fhirserver"), pytest.raises(Unavailable) as error:
        await authenticate(token)
    assert error.value.status == 503
    assert not isinstance(error.value, InvalidToken)
    assert "identity provider" in str(error.value)
    for text in (token, CLIENT_SECRET, idp.url):
        assert text not in str(error.value)
    assert token not in caplog.text
    assert CLIENT_SECRET not in caplog.text


async def test_a_failing_discovery_is_not_retried_on_every_opaque_token(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    authenticate = ExternalAuthenticator(settings_for(idp), http, clock, AUDIENCE)
    token, _ = active(idp)
    idp.failing = True
    for _ in range(10):
        with pytest.raises(Unavailable):
            await authenticate(token)
    assert idp.requests["failed"] == 1
    idp.failing = False
    clock.move_to(T0 + timedelta(seconds=6))
    assert (await authenticate(token)).subject == "bob"
