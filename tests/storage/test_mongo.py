"""What only the MongoDB store does (DESIGN.md "The storage contract"; PyMongo's
transactions guide "Transactions in Applications"): running a unit that lost a race
again (storage/retry.py), retrying a commit whose outcome is unknown, refusing writes
on a standalone server, and answering 503 when the database cannot be reached.
MongoDB's failures are injected into the mongomock adapter as PyMongo raises them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.errors import Contention, Unavailable
from fhirserver.search.query import TokenEntry
from fhirserver.storage.base import HistoryQuery, UnitOfWork, Version
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.mongo.documents import LAYOUT_VERSION
from fhirserver.storage.reindex import rebuild_outdated
from fhirserver.storage.retry import run_unit
from tests.mongomock_async import AsyncMockClient, AsyncMockCollection, MockSession

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def conflict(label: str) -> OperationFailure:
    return OperationFailure("WriteConflict", 112, {"errorLabels": [label]})


@pytest.fixture
def client() -> AsyncMockClient:
    return AsyncMockClient()


@pytest.fixture
async def store(client: AsyncMockClient) -> AsyncIterator[MongoStore]:
    opened = MongoStore("mongodb://mock/fhirserver", client=client, commit_timeout=0.5)  # type: ignore[arg-type]
    await opened.open()
    yield opened
    await opened.close()


async def put(store: MongoStore, rid: str = "a") -> None:
    async with store.unit_of_work() as unit:
        await unit.write(Version("Patient", rid, 1, T0, "POST", b"{}"), ())


def fail_counter_updates(monkeypatch: pytest.MonkeyPatch, errors: list[Exception]) -> None:
    """The next find-and-modify calls on `counters` raise these, in order."""
    original = AsyncMockCollection.find_one_and_update

    async def flaky(self: AsyncMockCollection, *args: Any, **kwargs: Any) -> Any:
        if self.sync.name == "counters" and errors:
            raise errors.pop(0)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMockCollection, "find_one_and_update", flaky)


async def put_retried(store: MongoStore, budget: float = 10.0) -> None:
    async def work(unit: UnitOfWork) -> None:
        await unit.write(Version("Patient", "a", 1, T0, "POST", b"{}"), ())

    await run_unit(store, work, budget)


async def test_a_unit_that_collides_on_its_counter_is_run_again(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Exception] = [conflict("TransientTransactionError") for _ in range(3)]
    fail_counter_updates(monkeypatch, errors)
    await put_retried(store)
    assert errors == []
    stored = await store.read("Patient", "a")
    assert stored is not None and stored.version == 1
    assert [v.id for v in await store.changes(0, 10)] == ["a"]


async def test_a_unit_gives_up_with_503_when_the_retry_budget_runs_out(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_counter_updates(monkeypatch, [conflict("TransientTransactionError")] * 10_000)
    with pytest.raises(Contention) as refused:
        await put_retried(store, budget=0.3)
    assert refused.value.status == 503
    assert refused.value.headers == {"Retry-After": "1"}
    assert await store.read("Patient", "a") is None


async def test_an_error_that_is_not_transient_is_not_retried(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Exception] = [OperationFailure("not authorized", 13), conflict("x")]
    fail_counter_updates(monkeypatch, errors)
    with pytest.raises(Unavailable, match="not authorized") as refused:
        await put_retried(store)
    assert len(errors) == 1
    assert "Retry-After" not in refused.value.headers


async def test_a_commit_with_an_unknown_outcome_is_committed_again(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MockSession.commit_transaction
    attempts: list[int] = []

    async def unknown_once(self: MockSession) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise conflict("UnknownTransactionCommitResult")
        await original(self)

    monkeypatch.setattr(MockSession, "commit_transaction", unknown_once)
    await put(store)
    assert len(attempts) == 2
    assert await store.read("Patient", "a") is not None


async def test_a_transient_error_inside_a_unit_rolls_back_and_answers_503(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(self: AsyncMockCollection, *args: Any, **kwargs: Any) -> Any:
        raise conflict("TransientTransactionError")

    with pytest.raises(Unavailable):
        async with store.unit_of_work() as unit:
            await unit.write(Version("Patient", "a", 1, T0, "POST", b"{}"), ())
            # Reading flushes the first write into the transaction.
            assert await unit.read("Patient", "a") is not None
            monkeypatch.setattr(AsyncMockCollection, "bulk_write", lost)
            await unit.write(Version("Patient", "a", 2, T0, "PUT", b"{}"), ())
            await unit.read("Patient", "a")
    monkeypatch.undo()
    assert await store.read("Patient", "a") is None
    assert await store.history(HistoryQuery(resource_type="Patient")) == ([], 0)


async def test_an_unreachable_database_answers_503(
    store: MongoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(self: AsyncMockCollection, *args: Any, **kwargs: Any) -> Any:
        raise AutoReconnect("connection refused")

    monkeypatch.setattr(AsyncMockCollection, "find_one", unreachable)
    with pytest.raises(Unavailable, match="cannot be reached"):
        await store.read("Patient", "a")


async def test_an_outdated_layout_asks_for_a_reindex(client: AsyncMockClient) -> None:
    first = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    await first.open()
    async with first.unit_of_work() as unit:
        entry = TokenEntry("identifier", "s", "1")
        await unit.write(
            Version("Patient", "a", 1, T0, "POST", b'{"resourceType":"Patient","id":"a"}'), (entry,)
        )
    assert first.index_outdated is False
    client.sync["fhirserver"]["counters"].update_one(
        {"_id": "layout"}, {"$set": {"version": LAYOUT_VERSION - 1}}
    )
    again = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    await again.open()
    assert again.index_outdated is True
    # Not rebuilt (the server was killed while it rebuilt): still outdated next time.
    cut_short = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    await cut_short.open()
    assert cut_short.index_outdated is True
    assert await rebuild_outdated(cut_short) is True
    current = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    await current.open()
    assert current.index_outdated is False


# --- a standalone server --------------------------------------------------------------


class StandaloneClient(AsyncMockClient):
    def __init__(self) -> None:
        super().__init__()

        class Admin:
            async def command(self, name: str) -> dict[str, Any]:
                return {"isWritablePrimary": True}

        self.admin = Admin()  # type: ignore[assignment]


async def test_a_standalone_server_serves_reads_and_refuses_writes_over_http(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = MongoStore("mongodb://mock/fhirserver", client=StandaloneClient())  # type: ignore[arg-type]
    app = create_app(Settings(store=str(tmp_path / "unused.sqlite")), store=store)
    async with app.router.lifespan_context(app):
        assert "replica set" in caplog.text
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/fhir") as http:
            metadata = await http.get("/metadata")
            assert metadata.status_code == 200
            assert (await http.get("/Patient/a")).status_code == 404
            created = await http.post(
                "/Patient",
                json={"resourceType": "Patient"},
                headers={"Content-Type": "application/fhir+json"},
            )
            assert created.status_code == 503, created.text
            outcome = created.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert "replica set" in outcome["issue"][0]["diagnostics"]
            assert (await http.get("/Patient")).json()["total"] == 0


async def test_a_transaction_run_again_links_its_patches_to_the_entries_it_creates(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction whose commit lost a race runs again from its entries as they came
    (R4 http.html#trules: references to a Bundle's fullUrls are rewritten to the ids
    the server gives). Its FHIRPath Patch must then point at the Patient of the run
    that committed, not at the one the lost run had named."""
    store = MongoStore("mongodb://mock/fhirserver", client=AsyncMockClient())  # type: ignore[arg-type]
    app = create_app(Settings(store=str(tmp_path / "unused.sqlite")), store=store)
    original = MockSession.commit_transaction
    commits: list[int] = []

    async def lost_once(self: MockSession) -> None:
        commits.append(1)
        if len(commits) == 1:
            raise conflict("TransientTransactionError")
        await original(self)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Content-Type": "application/fhir+json"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t/fhir", headers=headers
        ) as http:
            observation = {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "code": {"text": "weight"},
            }
            assert (await http.put("/Observation/o1", json=observation)).status_code == 201
            monkeypatch.setattr(MockSession, "commit_transaction", lost_once)
            patch = {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "operation",
                        "part": [
                            {"name": "type", "valueCode": "add"},
                            {"name": "path", "valueString": "Observation"},
                            {"name": "name", "valueString": "subject"},
                            {"name": "value", "valueReference": {"reference": "urn:uuid:p"}},
                        ],
                    }
                ],
            }
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "fullUrl": "urn:uuid:p",
                        "resource": {"resourceType": "Patient"},
                        "request": {"method": "POST", "url": "Patient"},
                    },
                    {"resource": patch, "request": {"method": "PATCH", "url": "Observation/o1"}},
                ],
            }
            response = await http.post("", json=bundle)
            assert response.status_code == 200, response.text
            assert len(commits) >= 2, "the transaction was not run again"
            patient = response.json()["entry"][0]["response"]["location"].split("/")[1]
            patched = (await http.get("/Observation/o1")).json()
            assert patched["subject"] == {"reference": f"Patient/{patient}"}
            assert (await http.get(f"/Patient/{patient}")).status_code == 200
