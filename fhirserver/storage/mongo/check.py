"""`fhirserver mongo check`: what an operator needs to know before pointing servers at a
MongoDB deployment. Opening the store creates the declared indexes (documents.py
INDEXES) and the change-counter stripes; this then reports the topology (a replica set
or a mongos: transactions; a standalone server takes no writes), the server version,
every declared index present or missing, the stripes and the change feed's watermark,
and how much is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirserver.storage.mongo.documents import INDEXES
from fhirserver.storage.mongo.store import MongoStore
from fhirserver.storage.mongo.unit import STRIPES


@dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str


async def check(store: MongoStore) -> list[Finding]:
    """Findings about an opened store; every `ok` is True when servers can use it."""
    hello = await store.client.admin.command("hello")
    findings = [_topology(hello)]
    version = (await store.client.admin.command("buildInfo")).get("version", "unknown")
    major = int(str(version).split(".")[0]) if str(version)[:1].isdigit() else 0
    findings.append(Finding("server version", major >= 6, f"{version} (6.0 or later is supported)"))
    database = store.database
    present: dict[str, set[tuple[tuple[str, int], ...]]] = {}
    for collection in {name for name, _, _ in INDEXES}:
        information = await database[collection].index_information()
        # A text, hashed or geo index names its kind where others give a direction.
        present[collection] = {
            tuple(
                (key, int(kind) if isinstance(kind, int | float) else kind)
                for key, kind in i["key"]
            )
            for i in information.values()
        }
    missing = [f"{c} {keys}" for c, keys, _ in INDEXES if tuple(keys) not in present[c]]
    findings.append(
        Finding(
            "indexes",
            not missing,
            f"{len(INDEXES) - len(missing)} of {len(INDEXES)} declared indexes present"
            + (f"; missing: {', '.join(missing)}" if missing else ""),
        )
    )
    stripes = await database.counters.count_documents({"_id": {"$regex": "^changes/"}})
    watermark = await store.watermark()
    findings.append(
        Finding(
            "change feed",
            stripes == STRIPES,
            f"{stripes} of {STRIPES} counter stripes; the change feed's watermark is {watermark}",
        )
    )
    # From the collections' metadata: counting would read every document.
    resources = await database.resources.estimated_document_count()
    versions = await database.versions.estimated_document_count()
    findings.append(Finding("contents", True, f"about {resources} resources, {versions} versions"))
    return findings


def _topology(hello: dict[str, Any]) -> Finding:
    if hello.get("msg") == "isdbgrid":
        return Finding("topology", True, "a sharded cluster (mongos): transactions available")
    if "setName" in hello:
        return Finding("topology", True, f"replica set {hello['setName']}: transactions available")
    return Finding(
        "topology",
        False,
        "a standalone server: no transactions, every write would be refused;"
        " start mongod with --replSet",
    )
