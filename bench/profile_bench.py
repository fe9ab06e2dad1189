"""Profile validation cost per resource (issue 13 point 4; README "Validation and
profiles"): the Synthea Patients and Observations checked against US Core 3.1.0
(us-core-patient; us-core-pulse-oximetry for the vital-sign Observations), next to the
core `validate()` of the same resources (the layer every write already pays) and a
floor (a deep copy of each resource, the least any walk of it costs), all in this run.
The profile lookup a write makes (the StructureDefinition by url in the store, compiled
form cached) is timed too. `BENCH_ONLY=profiles python -m bench`.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.synthea import DATA_DIR
from fhirserver.interactions.ig_load import load_package
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.check import check_profile
from fhirserver.profiles.package import read_package
from fhirserver.profiles.source import ProfileSource
from fhirserver.resources.validate import validate
from fhirserver.storage.sqlite import SqliteStore

US_CORE_TGZ = DATA_DIR.parent / "ig" / "hl7.fhir.us.core-3.1.0.tgz"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"
_MAX_PER_TYPE = 2000


def _resources() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {"Patient": [], "Observation": []}
    for path in sorted(DATA_DIR.glob("*.json")):
        for entry in orjson.loads(path.read_bytes()).get("entry", ()):
            resource = entry["resource"]
            kept = found.get(resource["resourceType"])
            if kept is not None and len(kept) < _MAX_PER_TYPE:
                kept.append(resource)
    return found


def _per_resource(work: Callable[[dict[str, Any]], object], items: list[dict[str, Any]]) -> float:
    """Microseconds per resource, the best of three passes."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - started)
    return best / max(len(items), 1) * 1e6


async def profile_benchmark() -> None:
    resources = _resources()
    with tempfile.TemporaryDirectory(prefix="fhirserver-bench-") as scratch:
        store = SqliteStore(str(Path(scratch, "fhir.sqlite")))
        await store.open()
        try:
            await load_package(store, WriteContext().as_server(), read_package(US_CORE_TGZ))
            source = ProfileSource()
            patient = await source.find(store, f"{US_CORE}/us-core-patient")
            oximetry = await source.find(store, f"{US_CORE}/us-core-pulse-oximetry")
            assert patient is not None and oximetry is not None
            lookups = 200
            started = time.perf_counter()
            for _ in range(lookups):
                await source.find(store, f"{US_CORE}/us-core-patient")
            lookup = (time.perf_counter() - started) / lookups * 1e6
        finally:
            await store.close()
    print("profiles: cost per resource (µs, best of 3 passes)", flush=True)
    for kind, profile in (("Patient", patient), ("Observation", oximetry)):
        items = resources[kind]
        floor = _per_resource(copy.deepcopy, items)
        core = _per_resource(validate, items)
        checked = _per_resource(lambda r, p=profile: check_profile(p, r), items)  # type: ignore[misc]
        print(
            f"  {len(items)} {kind} vs {profile.url.rsplit('/', 1)[1]}: profile check"
            f" {checked:,.1f}  core validate() {core:,.1f}  floor (deep copy) {floor:,.1f}",
            flush=True,
        )
    print(f"  profile lookup on write (store search by url, compiled cached): {lookup:,.1f}")


def run() -> None:
    asyncio.run(profile_benchmark())
