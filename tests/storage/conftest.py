"""The store fixture, parametrised over every backend: each contract test runs on all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirserver.storage.base import Store
from fhirserver.storage.sqlite import SqliteStore


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store = SqliteStore(str(tmp_path / "store.sqlite"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
