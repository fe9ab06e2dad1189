"""Loading the Synthea sample (100 patients, one transaction Bundle each): the issue's
acceptance test for `fhirserver import`, next to the same data through `POST [base]`.

R4 http.html#transaction: each Bundle is one transaction, its `urn:uuid:` fullUrls and
the references to them resolved to the ids the server writes (bundle.html#references),
so no placeholder is left in the store and every `Type/id` reference resolves. README
"Importing data": the import keeps each placeholder's uuid as the id, so importing the
same files twice leaves the same resources.

The data is in ../shared/data/synthea-2019; if it is missing these tests fail (they
are never skipped), as the official examples' tests do.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhirserver.config import Settings

pytestmark = pytest.mark.e2e

SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-2019"
BUNDLES = 100
# As the issue (and shared/data/README.md) states them; also worked out from the data.
ENTRIES = 28_041
DISTINCT_FULL_URLS = 27_861
CONCURRENT_POSTS = 4
REQUEST_TIMEOUT = 120.0  # seconds for one Bundle through the in-process app
IMPORT_TIMEOUT = 150.0  # seconds for one `fhirserver import` of the whole directory
CURRENT_SQL = (
    "SELECT r.type, r.id, v.body FROM resources r JOIN versions v ON v.seq = r.seq"
    " WHERE v.body IS NOT NULL"
)
LOCAL_REFERENCE = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
SUMMARY = re.compile(
    r"^fhirserver: imported (\d+) resources from (\d+) files in [\d.]+s .*; (\d+) problems$"
)


@dataclass(frozen=True)
class Synthea:
    files: list[Path]
    entries: int
    # (resourceType, uuid) of every distinct fullUrl: what the import writes.
    placeholders: frozenset[tuple[str, str]]


@pytest.fixture(scope="module")
def synthea() -> Synthea:
    files = sorted(SYNTHEA.glob("*.json"))
    assert len(files) == BUNDLES, f"expected {BUNDLES} Synthea Bundles in {SYNTHEA}"
    entries = 0
    placeholders: dict[str, tuple[str, str]] = {}
    for path in files:
        bundle = orjson.loads(path.read_bytes())
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            entries += 1
            assert entry["request"]["method"] == "POST"
            full_url = entry["fullUrl"]
            assert full_url.startswith("urn:uuid:"), full_url
            key = (entry["resource"]["resourceType"], full_url.removeprefix("urn:uuid:"))
            # A fullUrl repeated in another Bundle is the same resource again.
            assert placeholders.setdefault(full_url, key) == key
    assert entries == ENTRIES
    assert len(placeholders) == DISTINCT_FULL_URLS
    return Synthea(files, entries, frozenset(placeholders.values()))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The largest Bundle is over 3 MB: far past the shared fixture's 64 KiB limit. No
    # job runner: loading needs none, and a job-running server publishes its
    # subscription topics (5 Basic resources) at start-up, which the counts below
    # would include.
    return Settings(
        store=str(tmp_path / "fhir.sqlite"), max_body_bytes=16 * 1024 * 1024, run_jobs=False
    )


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str):
            yield reference
        for child in value.values():
            if isinstance(child, dict | list):
                yield from _references(child)
    elif isinstance(value, list):
        for child in value:
            yield from _references(child)


def check_store(path: str | Path) -> set[tuple[str, str]]:
    """Assert that no placeholder is left anywhere and that every `Type/id` reference
    resolves to a current resource; the current resources' (type, id)."""
    with closing(sqlite3.connect(path)) as connection:
        leftover = connection.execute(
            "SELECT type, id, version FROM versions"
            " WHERE instr(body, CAST('urn:uuid:' AS BLOB)) > 0 LIMIT 5"
        ).fetchall()
        assert leftover == [], f"urn:uuid: left in stored versions {leftover}"
        # Nor in the search index, which the import's workers worked out beforehand.
        for sql in (
            "SELECT count(*) FROM idx_reference WHERE url LIKE 'urn:uuid:%'"
            " OR target_id LIKE 'urn:uuid:%'",
            "SELECT count(*) FROM idx_uri WHERE value LIKE 'urn:uuid:%'",
        ):
            assert connection.execute(sql).fetchone() == (0,), sql
        rows = connection.execute(CURRENT_SQL).fetchall()
    current = {(resource_type, resource_id) for resource_type, resource_id, _ in rows}
    checked, dangling = 0, []
    for resource_type, resource_id, body in rows:
        for reference in _references(orjson.loads(body)):
            match = LOCAL_REFERENCE.fullmatch(reference)
            if match is None:
                continue
            checked += 1
            if (match[1], match[2]) not in current:
                dangling.append(f"{resource_type}/{resource_id} -> {reference}")
    assert dangling == [], f"{len(dangling)} references resolve to nothing: {dangling[:5]}"
    # Not vacuous: the Bundles link every clinical resource to its patient and more.
    assert checked > len(current), checked
    return current


async def test_transactions_over_http(
    synthea: Synthea, client: httpx.AsyncClient, settings: Settings
) -> None:
    started = time.monotonic()
    gate = asyncio.Semaphore(CONCURRENT_POSTS)

    async def post(path: Path) -> tuple[Path, httpx.Response]:
        async with gate:
            content = await asyncio.to_thread(path.read_bytes)
            response = await client.post(
                "",
                content=content,
                headers={"Prefer": "return=minimal"},
                timeout=REQUEST_TIMEOUT,
            )
            return path, response

    answered = await asyncio.gather(*(post(path) for path in synthea.files))

    locations: set[str] = set()
    for path, response in answered:
        assert response.status_code == 200, f"{path.name}: {response.text[:2000]}"
        bundle = response.json()
        assert bundle["type"] == "transaction-response"
        for entry in bundle["entry"]:
            assert entry["response"]["status"].startswith("201"), (path.name, entry)
            assert "resource" not in entry  # return=minimal
            locations.add(entry["response"]["location"])
    # Through plain HTTP every POST creates a new resource, even the Organization and
    # Practitioner entries that several Bundles repeat under the same urn:uuid (each
    # Bundle is an ordinary transaction; a placeholder means nothing beyond it). So
    # every entry is a resource of its own: 28,041, not the 27,861 distinct fullUrls.
    assert len(locations) == synthea.entries == ENTRIES

    current = check_store(settings.sqlite_path)
    assert len(current) == synthea.entries == ENTRIES
    with closing(sqlite3.connect(settings.sqlite_path)) as connection:
        assert connection.execute("SELECT count(*) FROM versions").fetchone() == (ENTRIES,)
    print(f"\n{ENTRIES} resources over HTTP in {time.monotonic() - started:.1f}s")


def run_import(directory: Path, store: Path, cwd: Path) -> tuple[str, float]:
    """`fhirserver import DIRECTORY --store STORE` with the default workers: its
    summary line, and how long it took."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fhirserver", "import", str(directory), "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0], took


def test_import_twice_keeps_ids(synthea: Synthea, tmp_path: Path) -> None:
    store = tmp_path / "imported.sqlite"
    # The import keeps each urn:uuid as the id: a fullUrl that several Bundles repeat
    # is one resource, updated by each, so there are as many as distinct fullUrls.
    expected = synthea.placeholders
    assert len(expected) == DISTINCT_FULL_URLS

    took = []
    for run in (1, 2):
        summary, seconds = run_import(SYNTHEA, store, tmp_path)
        took.append(seconds)
        match = SUMMARY.match(summary)
        assert match is not None, summary
        written, files, problems = (int(group) for group in match.groups())
        assert (written, files, problems) == (synthea.entries, BUNDLES, 0), summary
        current = check_store(store)
        # The same resources after the second run as after the first: no copies.
        assert len(current) == DISTINCT_FULL_URLS, f"run {run}"
        assert current == expected, f"run {run}"
    print(f"\nimported {ENTRIES} entries twice in {took[0]:.1f}s and {took[1]:.1f}s")
