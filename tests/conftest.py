"""Shared fixtures: the ASGI app in-process over httpx, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings

FHIR_JSON = "application/fhir+json"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store=str(tmp_path / "fhir.sqlite"), max_body_bytes=64 * 1024)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as http:
            yield http


def store_dump(settings: Settings) -> list[tuple[Any, ...]]:
    """Every row of every table, for byte-for-byte before/after comparisons."""
    with sqlite3.connect(settings.sqlite_path) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return [
            (table, *row)
            for table in tables
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
        ]


@pytest.fixture
def dump(settings: Settings) -> Iterator[Any]:
    yield lambda: store_dump(settings)
