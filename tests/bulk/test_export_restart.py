"""A bulk export survives its server process being killed (Bulk Data Access IG 2.0.0
export.html; issue 14 "Jobs are durable and resumable"): `fhirserver serve` is killed
with SIGKILL mid-export, started again on the same store, and the export finishes with
every resource exactly once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e.test_serve import Launch, http_client, launch  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

OBSERVATIONS = 6000
PER_BUNDLE = 1000
# The dead process's claim on the export job runs out after this (the default, 60 s,
# would be most of the test's time); it still outlives any one chunk of 20 resources.
LEASE_SECONDS = 3
# Well under the default lease: a restarted server that ignored the setting fails here.
FINISH_TIMEOUT = 45.0


def _bundle(start: int) -> dict[str, object]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": f"o{n}",
                    "status": "final",
                    "code": {"text": "weight"},
                },
                "request": {"method": "PUT", "url": f"Observation/o{n}"},
            }
            for n in range(start, start + PER_BUNDLE)
        ],
    }


def test_an_export_killed_mid_way_finishes_after_a_restart(
    launch: Launch,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    store = tmp_path / "fhir.sqlite"
    exports = tmp_path / "exports"
    env = {
        "FHIRSERVER_EXPORT_DIR": str(exports),
        "FHIRSERVER_EXPORT_CHUNK": "20",
        "FHIRSERVER_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    }
    first = launch(store=store, env=env)
    with http_client(first.base) as http:
        for start in range(0, OBSERVATIONS, PER_BUNDLE):
            assert http.post("", json=_bundle(start)).status_code == 200
        kick_off = http.get(
            "$export?_type=Observation",
            headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
        )
        assert kick_off.status_code == 202
        status_url = kick_off.headers["Content-Location"]
        export_id = status_url.rsplit("/", 1)[1]
        written = exports / export_id / "Observation-1.ndjson"
        deadline = time.monotonic() + 60
        while not (written.exists() and written.stat().st_size > 0):
            assert time.monotonic() < deadline, "the export did not start"
            time.sleep(0.05)
    first.kill()
    lines_at_kill = written.read_bytes().count(b"\n")
    assert 0 < lines_at_kill < OBSERVATIONS

    second = launch(store=store, env=env)
    port = second.base.split(":")[2].split("/")[0]
    status_url = status_url.replace(status_url.split("/")[2], f"127.0.0.1:{port}")
    with http_client(second.base) as http:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            answer = http.get(status_url)
            if answer.status_code == 200:
                break
            assert answer.status_code == 202, answer.text
            assert time.monotonic() < deadline, "the export did not finish after the restart"
            time.sleep(float(answer.headers["Retry-After"]) + 0.1)
        manifest = answer.json()
        ids: list[str] = []
        for item in manifest["output"]:
            body = http.get(item["url"]).text
            lines = [json.loads(line) for line in body.splitlines()]
            assert len(lines) == item["count"]
            ids.extend(line["id"] for line in lines)
    assert len(ids) == OBSERVATIONS
    assert set(ids) == {f"o{n}" for n in range(OBSERVATIONS)}
