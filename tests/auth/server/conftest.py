"""Fixtures of the built-in authorization server's tests: a store on every backend
(tests/backends.py), and the app in smart mode on it, in-process over httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirserver.storage.base import Store
from tests.backends import BACKENDS, make_backend


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
