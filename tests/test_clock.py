"""One clock (fhirserver/clock.py, DESIGN.md "time comes from one injected clock"): the
app's writes, its CapabilityStatement and its jobs all read the clock it was given."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.storage.base import Job
from tests.backends import Backend
from tests.clock import MovableClock

THEN = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


async def test_the_app_reads_only_the_clock_it_was_given(
    settings: Settings, test_backend: Backend
) -> None:
    clock = MovableClock()
    clock.move_to(THEN)
    app = create_app(settings, store=test_backend.store, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir") as http:
            created = await http.post("/Patient", json={"resourceType": "Patient"})
            assert created.json()["meta"]["lastUpdated"] == "2031-05-06T07:08:09.123456Z"
            deleted = await http.delete(f"/Patient/{created.json()['id']}")
            assert deleted.status_code == 204
            history = (await http.get(f"/Patient/{created.json()['id']}/_history")).json()
            stamps = {e["response"]["lastModified"] for e in history["entry"]}
            assert stamps == {"2031-05-06T07:08:09.123456Z"}
            metadata = (await http.get("/metadata")).json()
            assert metadata["date"] == "2031-05-06T07:08:09.123456Z"
        # A job due at THEN is due for this app, whatever the machine's time.
        ran: list[str] = []

        async def handler(job: Job) -> None:
            ran.append(job.key)

        app.state.jobs.handlers["test.kind"] = handler
        async with test_backend.store.unit_of_work() as unit:
            await unit.put_job(Job("test.kind", "due", THEN))
        assert await app.state.jobs.run_due() == 1
        assert ran == ["due"]
