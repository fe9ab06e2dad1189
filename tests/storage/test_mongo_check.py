"""`fhirserver mongo check` (storage/mongo/check.py): what it reports of a store that
servers can use, and of one they cannot (a missing index, a standalone server)."""

from __future__ import annotations

import pytest

from fhirserver.cli import main, run_mongo_check
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.mongo.check import check
from fhirserver.storage.mongo.documents import INDEXES
from tests.mongomock_async import AsyncMockClient


async def test_a_usable_store_is_reported_ok(capsys: pytest.CaptureFixture[str]) -> None:
    client = AsyncMockClient()
    store = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    assert await run_mongo_check(store) == 0
    out = capsys.readouterr().out
    assert "ok   topology: replica set mongomock" in out
    assert f"ok   indexes: {len(INDEXES)} of {len(INDEXES)} declared indexes present" in out
    assert "ok   change feed: 64 of 64 counter stripes" in out


async def test_a_missing_index_and_a_standalone_server_fail() -> None:
    client = AsyncMockClient()
    store = MongoStore("mongodb://mock/fhirserver", client=client)  # type: ignore[arg-type]
    await store.open()
    client.sync["fhirserver"].versions.drop_index("lu_1")

    async def standalone(name: str) -> dict[str, object]:
        return {"version": "7.0.0"} if name == "buildInfo" else {"isWritablePrimary": True}

    client.admin.command = standalone  # type: ignore[method-assign]
    findings = {finding.what: finding for finding in await check(store)}
    assert not findings["topology"].ok and "standalone" in findings["topology"].detail
    assert not findings["indexes"].ok
    assert "missing: versions (('lu', 1),)" in findings["indexes"].detail


def test_the_command_wants_a_mongodb_store() -> None:
    with pytest.raises(SystemExit) as refused:
        main(["mongo", "check", "--store", "store.sqlite"])
    assert refused.value.code == 2
