"""Issue 20, finding 2: a search past the server's time limit answers 503 with an
OperationOutcome (IssueType `too-costly`), never a 500 or a hang; other requests go on.
R4 search.html, http.html#search."""

from __future__ import annotations

from pathlib import Path

import httpx

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.storage.sqlite.store import SqliteStore


async def test_a_search_past_the_limit_answers_503_too_costly(tmp_path: Path) -> None:
    settings = Settings(store=str(tmp_path / "fhir.sqlite"), run_jobs=False)
    store = SqliteStore(settings.sqlite_path)
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x/fhir") as http:
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {"resourceType": "Patient"},
                        "request": {"method": "POST", "url": "Patient"},
                    }
                    for _ in range(300)
                ],
            }
            assert (await http.post("", json=bundle)).status_code == 200
            store.search_timeout, store.progress_steps = 1e-6, 100
            stopped = await http.get("/Patient", params={"_total": "accurate"})
            assert stopped.status_code == 503
            issue = stopped.json()["issue"][0]
            assert issue["code"] == "too-costly"
            assert "took longer than the server" in issue["diagnostics"]
            history = await http.get("/Patient/_history")
            assert history.status_code == 503
            # A read by id has no search's limit.
            created = await http.post("/Patient", json={"resourceType": "Patient"})
            assert (await http.get(f"/Patient/{created.json()['id']}")).status_code == 200
