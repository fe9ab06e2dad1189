"""External mode's settings and an identity provider that is down: OpenID Connect
Discovery 1.0 section 4.3 (the document must name the issuer it was fetched for)
and section 7 / RFC 7662 section 4 (TLS for everything fetched from the IdP), and
RFC 6750 section 3.1 beside RFC 9110 section 15.6.4: a token that cannot be checked
because the IdP is unreachable is a 503, not an `invalid_token` 401."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest

from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.external import ExternalAuthenticator, external_authenticator
from fhirserver.config import Settings
from fhirserver.errors import Unavailable
from tests.auth.external_idp import AUDIENCE, T0, FakeIdP, clock, http, idp, rsa_key, serving
from tests.clock import MovableClock

__all__ = ["clock", "http", "idp"]

# The credentials of a URL that must not show up anywhere.
SECRET = "hunter2"


def claims(idp: FakeIdP, **changes: Any) -> dict[str, Any]:
    now = int(T0.timestamp())
    return {
        "iss": idp.url,
        "aud": AUDIENCE,
        "sub": "alice",
        "scope": "system/*.rs",
        "iat": now,
        "exp": now + 3600,
        **changes,
    }


def made(http: httpx.AsyncClient, clock: MovableClock, **settings: Any) -> ExternalAuthenticator:
    return ExternalAuthenticator(Settings(auth="external", **settings), http, clock, AUDIENCE)


def refusal(http: httpx.AsyncClient, clock: MovableClock, **settings: Any) -> str:
    with pytest.raises(ValueError) as error:
        made(http, clock, **settings)
    return str(error.value)


# -- settings refused before the server listens ---------------------------------------


@pytest.mark.parametrize(
    ("setting", "variable"),
    [
        ("auth_issuer", "FHIRSERVER_AUTH_ISSUER"),
        ("auth_jwks_url", "FHIRSERVER_AUTH_JWKS_URL"),
    ],
)
async def test_plain_http_to_another_host_is_refused_at_start_up(
    http: httpx.AsyncClient, clock: MovableClock, setting: str, variable: str
) -> None:
    message = refusal(http, clock, **{setting: "http://idp.example.com/realms/fhir"})
    assert variable in message
    assert "https://" in message
    assert "idp.example.com" not in message


async def test_introspection_over_plain_http_is_refused_at_start_up(
    http: httpx.AsyncClient, clock: MovableClock
) -> None:
    message = refusal(
        http,
        clock,
        auth_jwks_url="https://idp.example.com/jwks",
        auth_introspection_url="http://idp.example.com/introspect",
        auth_introspection_client_id="fhir",
        auth_introspection_client_secret=SECRET,
    )
    assert "FHIRSERVER_AUTH_INTROSPECTION_URL" in message
    assert SECRET not in message


async def test_introspection_without_credentials_is_refused_at_start_up(
    http: httpx.AsyncClient, clock: MovableClock
) -> None:
    message = refusal(
        http,
        clock,
        auth_jwks_url="https://idp.example.com/jwks",
        auth_introspection_url="https://idp.example.com/introspect",
    )
    assert "FHIRSERVER_AUTH_INTROSPECTION_CLIENT_ID" in message


@pytest.mark.parametrize(
    "url",
    [
        f"https://admin:{SECRET}@idp.example.com/",
        "ftp://idp.example.com/",
        "idp.example.com",
        "https://idp.example.com:notaport/",
    ],
)
async def test_urls_that_cannot_be_used_are_refused_without_repeating_them(
    http: httpx.AsyncClient, clock: MovableClock, url: str
) -> None:
    message = refusal(http, clock, auth_issuer=url)
    assert "FHIRSERVER_AUTH_ISSUER" in message
    assert url not in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com/realms/fhir",
        "http://localhost:8080/realms/fhir",
        "http://127.0.0.1:8080",
        "http://127.1.2.3",
        "http://[::1]:8080/",
    ],
)
async def test_https_and_loopback_http_are_accepted(
    http: httpx.AsyncClient, clock: MovableClock, url: str
) -> None:
    made(http, clock, auth_issuer=url)


async def test_an_audience_is_required(http: httpx.AsyncClient, clock: MovableClock) -> None:
    settings = Settings(auth="external", auth_issuer="https://idp.example.com")
    with pytest.raises(ValueError, match="audience"):
        ExternalAuthenticator(settings, http, clock, "")


# -- discovery ------------------------------------------------------------------------


async def test_a_discovery_document_for_another_issuer_is_not_used(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.claimed_issuer = "https://evil.example.com"
    settings = Settings(auth="external", auth_issuer=idp.url)
    with caplog.at_level(logging.ERROR, logger="fhirserver"), pytest.raises(Unavailable):
        await external_authenticator(settings, http, clock, AUDIENCE)
    assert "names another issuer" in caplog.text
    assert idp.requests["jwks"] == 0


async def test_a_discovered_key_set_over_plain_http_elsewhere_is_not_fetched(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.discovery_overrides["jwks_uri"] = "http://keys.example.com/jwks"
    settings = Settings(auth="external", auth_issuer=idp.url)
    with caplog.at_level(logging.ERROR, logger="fhirserver"), pytest.raises(Unavailable):
        await external_authenticator(settings, http, clock, AUDIENCE)
    assert "jwks_uri" in caplog.text
    assert "https://" in caplog.text


async def test_an_issuer_with_a_trailing_slash_finds_its_document(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    """Discovery section 4: the trailing `/` goes before `/.well-known/...` is added;
    the `iss` compared is still the issuer exactly as configured."""
    idp.claimed_issuer = idp.url + "/"
    settings = Settings(auth="external", auth_issuer=idp.url + "/")
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    access = await authenticate(idp.mint(claims(idp, iss=idp.url + "/")))
    assert access.subject == "alice"


async def test_a_key_set_url_alone_needs_no_discovery(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    settings = Settings(auth="external", auth_jwks_url=f"{idp.url}/jwks")
    authenticate = await external_authenticator(settings, http, clock, AUDIENCE)
    # No issuer configured: `iss` is not compared.
    access = await authenticate(idp.mint(claims(idp, iss="https://anyone.example.com")))
    assert access.subject == "alice"
    assert idp.requests["discovery"] == 0


async def test_discovery_waits_for_the_first_token_when_not_prepared(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    authenticate = made(http, clock, auth_issuer=idp.url)
    assert sum(idp.requests.values()) == 0
    assert (await authenticate(idp.mint(claims(idp)))).subject == "alice"
    assert idp.requests["discovery"] == 1
    assert idp.requests["jwks"] == 1


# -- the identity provider down ---------------------------------------------------------


async def unreachable_url() -> str:
    """The URL of an IdP that was there a moment ago and is gone."""
    async with serving(FakeIdP()) as gone:
        return gone.url


async def test_an_unreachable_idp_at_start_up_is_reported(
    http: httpx.AsyncClient, clock: MovableClock
) -> None:
    settings = Settings(auth="external", auth_issuer=await unreachable_url())
    with pytest.raises(Unavailable) as error:
        await external_authenticator(settings, http, clock, AUDIENCE)
    assert error.value.status == 503


async def test_a_token_while_the_idp_is_down_is_a_503_not_a_401(
    http: httpx.AsyncClient, clock: MovableClock
) -> None:
    url = await unreachable_url()
    authenticate = made(http, clock, auth_issuer=url)
    token = FakeIdP().mint(claims(FakeIdP(url=url)))
    with pytest.raises(Unavailable) as error:
        await authenticate(token)
    assert not isinstance(error.value, InvalidToken)
    assert error.value.status == 503
    assert url not in str(error.value)


async def test_an_idp_answering_500_is_a_503_and_is_not_hammered(
    idp: FakeIdP, http: httpx.AsyncClient, clock: MovableClock
) -> None:
    authenticate = made(http, clock, auth_issuer=idp.url)
    idp.failing = True
    token = idp.mint(claims(idp))
    for _ in range(10):
        with pytest.raises(Unavailable):
            await authenticate(token)
    # One try, then a pause of a few seconds before the next.
    assert idp.requests["failed"] == 1
    idp.failing = False
    clock.move_to(T0 + timedelta(seconds=6))
    assert (await authenticate(token)).subject == "alice"


async def test_known_keys_keep_verifying_while_the_idp_is_down(
    http: httpx.AsyncClient, clock: MovableClock
) -> None:
    async with serving(FakeIdP()) as idp:
        authenticate = await external_authenticator(
            Settings(auth="external", auth_issuer=idp.url), http, clock, AUDIENCE
        )
    # The IdP is gone; its keys were fetched at start-up.
    good = idp.mint(claims(idp))
    assert (await authenticate(good)).subject == "alice"
    # Past the key set's time: an old set still verifies rather than lock everyone out.
    clock.move_to(T0 + timedelta(minutes=10))
    assert (await authenticate(good)).subject == "alice"
    # A key it never saw may be a rotation it cannot fetch: 503, not 401.
    rotated = rsa_key("key-2")
    clock.move_to(T0 + timedelta(minutes=11))
    with pytest.raises(Unavailable) as error:
        await authenticate(idp.mint(claims(idp), key=rotated))
    assert not isinstance(error.value, InvalidToken)
