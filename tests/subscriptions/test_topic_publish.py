"""Topic discovery (Backport IG 1.1.0 "Subscription Topics in R4"; Capabilities.fsh
backport-subscription-server-r4: servers SHOULD support Basic read and search by `code`
for topics): the shipped topics are readable and searchable as Basic resources once the
server has started, and a restart does not write them again. A process that runs no
jobs writes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.interactions import crud
from fhirserver.subscriptions.publish import publish_topics, shipped_topic_resources
from fhirserver.subscriptions.topics import server_topics
from tests.backends import Backend, make_backend
from tests.conftest import FHIR_JSON

TOPIC_CODE = "http://hl7.org/fhir/fhir-types|SubscriptionTopic"
URL_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.url"


def _urls(bundle: dict[str, object]) -> list[str]:
    entries = bundle.get("entry") or []
    assert isinstance(entries, list)
    return sorted(
        ext["valueUri"]
        for entry in entries
        for ext in entry["resource"]["extension"]
        if ext["url"] == URL_EXT
    )


async def _serve(settings: Settings, backend: Backend) -> tuple[list[str], dict[str, object]]:
    """Start the app as a job-running process (the ones that publish the topics),
    search the topics and read one; what it found."""
    app = create_app(replace(settings, run_jobs=True), store=backend.store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver/fhir", headers={"Accept": FHIR_JSON}
        ) as http:
            found = await http.get("/Basic", params={"code": TOPIC_CODE})
            assert found.status_code == 200, found.text
            one = await http.get("/Basic/SubscriptionTopic-patient-waiting")
            assert one.status_code == 200, one.text
            return _urls(found.json()), one.json()


async def test_topics_are_found_by_code_and_read_by_id(
    settings: Settings, test_backend: Backend
) -> None:
    urls, waiting = await _serve(settings, test_backend)
    assert urls == sorted(server_topics())
    assert waiting["id"] == "SubscriptionTopic-patient-waiting"
    meta = waiting["meta"]
    assert isinstance(meta, dict)
    assert meta["versionId"] == "1"


async def test_a_restart_writes_nothing_new_and_a_changed_topic_is_rewritten(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    # One store for two starts of the app (a restart).
    chosen = make_backend(backend, tmp_path / "restart.sqlite")
    try:
        await _serve(settings, chosen)
        _, again = await _serve(settings, chosen)
        meta = again["meta"]
        assert isinstance(meta, dict)
        assert meta["versionId"] == "1"
        # Someone edited a topic in the store: the next start puts the shipped one back.
        app = create_app(settings, store=chosen.store)
        async with app.router.lifespan_context(app):
            edited = {k: v for k, v in again.items() if k not in ("meta", "extension")}
            store, writes = app.state.store, app.state.writes
            await crud.update(store, writes, "Basic", str(again["id"]), edited)
            assert await publish_topics(store, writes, shipped_topic_resources()) == [
                "Basic/SubscriptionTopic-patient-waiting"
            ]
            assert await publish_topics(store, writes, shipped_topic_resources()) == []
    finally:
        chosen.cleanup()


async def test_a_process_that_runs_no_jobs_publishes_nothing(
    settings: Settings, test_backend: Backend
) -> None:
    assert not settings.run_jobs
    app = create_app(settings, store=test_backend.store)
    async with app.router.lifespan_context(app):
        assert await test_backend.store.read("Basic", "SubscriptionTopic-patient-waiting") is None
