"""The store fixture, parametrised over every backend: each contract test runs on all."""

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
    chosen = make_backend(backend, tmp_path / "store.sqlite")
    await chosen.store.open()
    try:
        yield chosen.store
    finally:
        await chosen.store.close()
        chosen.cleanup()
