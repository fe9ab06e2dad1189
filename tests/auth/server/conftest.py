"""Fixtures of the built-in authorization server's tests: a store on every backend
(tests/backends.py), and the app in smart mode on it, in-process over httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.auth.server import AuthServer
from fhirserver.config import Settings
from fhirserver.storage.base import Store
from tests.backends import BACKENDS, make_backend
from tests.clock import MovableClock


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    chosen = make_backend(backend, tmp_path / "records.sqlite")
    await chosen.store.open()
    try:
        yield chosen.store
    finally:
        await chosen.store.close()
        chosen.cleanup()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def smart_settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "fhir.sqlite"), auth="smart", run_jobs=False)


@pytest.fixture
async def smart_app(
    backend: str, smart_settings: Settings, clock: MovableClock
) -> AsyncIterator[Starlette]:
    chosen = make_backend(backend, Path(smart_settings.sqlite_path))
    app = create_app(smart_settings, store=chosen.store, clock=clock)
    try:
        async with app.router.lifespan_context(app):
            yield app
    finally:
        chosen.cleanup()


@pytest.fixture
async def http(smart_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=smart_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def auth_server(smart_app: Starlette) -> AuthServer:
    server: AuthServer = smart_app.state.auth_server
    return server
