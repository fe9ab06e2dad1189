"""Forwarded headers (issue 20 point 3, deliver 4): X-Forwarded-For and
X-Forwarded-Proto count only from a peer listed in FHIRSERVER_TRUSTED_PROXIES (empty by
default), for rate limits, audit addresses and the base URL alike; through a chain of
trusted proxies the client is the right-most address that is not itself one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.telehealth.codes import ALPHABET

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    @asynccontextmanager
    async def serving(
        trusted: str = "", peer: str = "127.0.0.1", rate: int = 3
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(
            store=str(tmp_path / "f.sqlite"),
            run_jobs=False,
            trusted_proxies=trusted,
            join_rate_per_minute=rate,
        )
        app: Starlette = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=(peer, 40000))
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://fhir.internal:8080",
                headers={"Content-Type": "application/fhir+json"},
            ) as http:
                yield http

    return serving


async def _location(http: httpx.AsyncClient, **headers: str) -> str:
    created = await http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert created.status_code == 201, created.text
    return created.headers["location"]


def guess(n: int) -> str:
    """The n-th code a guesser tries: another one each time."""
    digits = (n // len(ALPHABET) ** i % len(ALPHABET) for i in range(3))
    return "ABCDEFG" + "".join(ALPHABET[d] for d in digits)


async def _guesses(http: httpx.AsyncClient, forwarded_for: str, tries: range) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for}
    statuses = []
    for n in tries:
        answer = await http.post(f"/join/{guess(n)}", json={"name": "M"}, headers=headers)
        statuses.append(answer.status_code)
    return statuses


async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(serve: Serve) -> None:
    async with serve() as http:
        location = await _location(http, **{"X-Forwarded-Proto": "https"})
    assert location.startswith("http://fhir.internal:8080/fhir/Patient/")


async def test_forwarded_proto_from_a_trusted_proxy_makes_the_base_url(serve: Serve) -> None:
    async with serve(trusted="10.1.0.0/16, 127.0.0.1") as http:
        location = await _location(http, **{"X-Forwarded-Proto": "https"})
        assert location.startswith("https://fhir.internal:8080/fhir/Patient/")
    async with serve(trusted="10.1.0.0/16", peer="10.1.2.3") as http:
        location = await _location(http, **{"X-Forwarded-Proto": "https"})
        assert location.startswith("https://fhir.internal:8080/fhir/Patient/")


async def test_forged_forwarded_for_gets_no_fresh_limit(serve: Serve) -> None:
    async with serve() as http:
        statuses = [(await _guesses(http, f"203.0.113.{n}", range(n, n + 1)))[0] for n in range(6)]
    assert statuses == [404] * 3 + [429] * 3


async def test_a_trusted_proxys_client_is_the_forwarded_address(serve: Serve) -> None:
    async with serve(trusted="127.0.0.1") as http:
        assert await _guesses(http, "203.0.113.1", range(4)) == [404] * 3 + [429]
        # Another client behind the same proxy has a limit of its own.
        assert await _guesses(http, "203.0.113.2", range(4, 5)) == [404]


async def test_through_a_chain_the_client_is_the_rightmost_untrusted_address(
    serve: Serve,
) -> None:
    async with serve(trusted="127.0.0.1, 10.0.0.0/8") as http:
        # The left-most entries are the client's to write: only what trusted proxies
        # appended counts.
        assert await _guesses(http, "198.51.100.7, 203.0.113.1, 10.2.3.4", range(3)) == [404] * 3
        assert await _guesses(http, "198.51.100.8, 203.0.113.1, 10.9.9.9", range(3, 4)) == [429]
        assert await _guesses(http, "203.0.113.2, 10.2.3.4", range(4, 5)) == [404]


def test_the_setting_takes_addresses_and_networks_only() -> None:
    assert Settings(trusted_proxies=" 127.0.0.1 , 10.0.0.0/8,::1, fd00::/8").trusted_proxies
    assert Settings.from_env({"FHIRSERVER_TRUSTED_PROXIES": "192.0.2.1"}).trusted_proxies
    for bad in ("proxy.example.org", "10.0.0.1/8", "*", "10.0.0.0/33"):
        with pytest.raises(ValueError, match="FHIRSERVER_TRUSTED_PROXIES"):
            Settings(trusted_proxies=bad)
