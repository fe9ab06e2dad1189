"""Start-up of the application (DESIGN.md "Storage"): a store whose index tables were
upgraded is reindexed before the first request, so search finds what was stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from fhirserver.app import create_app
from fhirserver.config import Settings


async def _names(settings: Settings) -> tuple[int, list[str]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir") as client:
            created = await client.put(
                "/Patient/p1",
                json={"resourceType": "Patient", "id": "p1", "name": [{"family": "Lovelace"}]},
                headers={"Content-Type": "application/fhir+json"},
            )
            found = (await client.get("/Patient", params={"name": "love"})).json()
            return created.status_code, [e["resource"]["id"] for e in found.get("entry", [])]


async def test_upgraded_index_is_rebuilt_at_start(tmp_path: Path) -> None:
    settings = Settings(store=str(tmp_path / "f.sqlite"))
    assert await _names(settings) == (201, ["p1"])
    with sqlite3.connect(settings.sqlite_path) as connection:
        connection.execute("PRAGMA user_version = 1")
    # The index tables are replaced empty on open, then rebuilt from the resources.
    assert await _names(settings) == (200, ["p1"])
