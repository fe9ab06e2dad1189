"""Shared fixtures: the ASGI app in-process over httpx, on a real SQLite file, or on
every backend (tests/backends.py) in the suites that override `backend`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.storage.base import Store
from tests.backends import BACKENDS, Backend, make_backend

FHIR_JSON = "application/fhir+json"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Jobs run when a test says so (`app.state.jobs.run_due()`), not behind its back.
    return Settings(store=str(tmp_path / "fhir.sqlite"), max_body_bytes=64 * 1024, run_jobs=False)


@pytest.fixture
def backend() -> str:
    """The store the app runs on. The storage contract's suites (storage, search,
    REST and Bundles) parametrise this over every backend in their conftest."""
    return "sqlite"


@pytest.fixture
def test_backend(backend: str, settings: Settings) -> Iterator[Backend]:
    chosen = make_backend(backend, Path(settings.sqlite_path))
    try:
        yield chosen
    finally:
        chosen.cleanup()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An opened store on every backend, for the tests below HTTP (jobs, export,
    `$everything`)."""
    chosen = make_backend(str(request.param), tmp_path / "store.sqlite")
    await chosen.store.open()
    try:
        yield chosen.store
    finally:
        await chosen.store.close()
        chosen.cleanup()


@pytest.fixture
async def client(settings: Settings, test_backend: Backend) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, store=test_backend.store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as http:
            yield http


@pytest.fixture
def dump(test_backend: Backend) -> Iterator[Any]:
    """Every stored row or document of the backend the app runs on."""
    yield test_backend.dump
