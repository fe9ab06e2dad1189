"""bench/synthea.py: `make bench`'s loader writes Synthea-shaped transaction Bundles into
a SQLite store through crud, each resource under its urn:uuid, references resolved."""

from __future__ import annotations

import json
from pathlib import Path

from bench.synthea import load
from fhirserver.interactions import crud
from fhirserver.resources import codec
from fhirserver.storage.sqlite import SqliteStore

BUNDLE = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "fullUrl": "urn:uuid:p1",
            "resource": {"resourceType": "Patient", "name": [{"family": "Load"}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": "urn:uuid:o1",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "weight"},
                "subject": {"reference": "urn:uuid:p1"},
            },
            "request": {"method": "POST", "url": "Observation"},
        },
    ],
}


async def test_load_writes_every_resource_under_its_uuid(tmp_path: Path) -> None:
    source = tmp_path / "bundle.json"
    source.write_text(json.dumps(BUNDLE))
    loaded = await load([source], tmp_path / "synthea.sqlite")
    assert (loaded.resources, loaded.rejected) == (2, 0)
    store = SqliteStore(str(tmp_path / "synthea.sqlite"))
    await store.open()
    try:
        observation = await crud.read(store, "Observation", "o1")
        assert observation.body is not None
        assert codec.load_object(observation.body)["subject"] == {"reference": "Patient/p1"}
        assert (await crud.read(store, "Patient", "p1")).version == 1
    finally:
        await store.close()
