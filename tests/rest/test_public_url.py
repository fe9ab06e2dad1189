"""Absolute URLs behind a proxy (R4 http.html#general, bundle.html#fullUrl): Location,
fullUrl and Bundle links all use the configured public base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings

PUBLIC = "https://fhir.example.org/r4"


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # No job runner: the system history holds only this test's writes (a job-running
    # process also publishes the subscription topics).
    settings = Settings(store=str(tmp_path / "f.sqlite"), public_url=PUBLIC + "/", run_jobs=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://internal:9000/fhir",
            headers={"Content-Type": "application/fhir+json"},
        ) as http:
            yield http


async def test_every_absolute_url_is_public(proxied: httpx.AsyncClient) -> None:
    created = await proxied.post("/Patient", json={"resourceType": "Patient"})
    assert created.headers["location"].startswith(PUBLIC + "/Patient/")
    for _ in range(2):
        await proxied.post("/Patient", json={"resourceType": "Patient"})
    bundle = (await proxied.get("/_history", params={"_count": "2"})).json()
    urls = [link["url"] for link in bundle["link"]] + [e["fullUrl"] for e in bundle["entry"]]
    assert len(urls) == 4
    assert all(url.startswith(PUBLIC + "/") for url in urls), urls
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    follow = await proxied.get(next_url.replace(PUBLIC, "http://internal:9000/fhir"))
    assert len(follow.json()["entry"]) == 1
