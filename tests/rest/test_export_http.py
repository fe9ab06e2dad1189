"""Bulk Data export over HTTP (Bulk Data Access IG 2.0.0 export.html: "Bulk Data
Kick-off Request", "Bulk Data Status Request", "Bulk Data Delete Request", "Bulk Data
Output File Request"; SMART backend-services.html for who may export), on every store.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.auth.access import Access
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.scopes import parse_scopes
from fhirserver.bulk.export_job import EXPORT, run_chunk
from fhirserver.config import Settings
from fhirserver.worker import LEASE
from tests.backends import BACKENDS, make_backend
from tests.clock import MovableClock

FHIR_JSON = "application/fhir+json"
ASYNC = {"Prefer": "respond-async", "Accept": FHIR_JSON}
START = datetime.now(UTC).replace(microsecond=0)

TOKENS = {
    "system": Access(client_id="etl", scopes=parse_scopes("system/*.rs")),
    "patients-only": Access(client_id="etl2", scopes=parse_scopes("system/Patient.rs")),
    "other-client": Access(client_id="intruder", scopes=parse_scopes("system/*.rs")),
    "patient-app": Access(client_id="app", scopes=parse_scopes("patient/*.rs"), patient="p1"),
    "writer": Access.everything(),
    # Two users of one app: each may export their own record only.
    "user-p1": Access(client_id="app", scopes=parse_scopes("user/*.rs"), user="Patient/p1"),
    "user-p2": Access(client_id="app", scopes=parse_scopes("user/*.rs"), user="Patient/p2"),
}


async def authenticate(token: str) -> Access:
    if token not in TOKENS:
        raise InvalidToken("the token is not known")
    return TOKENS[token]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> MovableClock:
    moving = MovableClock()
    moving.move_to(START)
    return moving


def make_settings(tmp_path: Path, **more: Any) -> Settings:
    return Settings(
        store=str(tmp_path / "fhir.sqlite"),
        run_jobs=False,
        export_dir=str(tmp_path / "exports"),
        **more,
    )


async def running_app(
    backend: str, tmp_path: Path, clock: MovableClock, auth: bool, **more: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = make_settings(tmp_path, **more)
    chosen = make_backend(backend, Path(settings.sqlite_path))
    app = create_app(
        settings, store=chosen.store, clock=clock, authenticator=authenticate if auth else None
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://testserver/fhir",
                headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            ) as http:
                yield http, app
    finally:
        chosen.cleanup()


@pytest.fixture
async def served(
    backend: str, tmp_path: Path, clock: MovableClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async for pair in running_app(backend, tmp_path, clock, auth=False):
        await seed(pair[0])
        yield pair


@pytest.fixture
async def guarded(
    backend: str, tmp_path: Path, clock: MovableClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async for pair in running_app(backend, tmp_path, clock, auth=True, export_max_per_client=1):
        await seed(pair[0], {"Authorization": "Bearer writer"})
        yield pair


SEED: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]},
    {"resourceType": "Organization", "id": "org", "name": "Clinic"},
    *(
        {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/p{1 + n % 2}"},
        }
        for n in range(5)
    ),
    {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": "Patient/p2"}}],
    },
]


async def seed(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    for resource in SEED:
        url = f"{resource['resourceType']}/{resource['id']}"
        answer = await http.put(url, json=resource, headers=headers)
        assert answer.status_code == 201, answer.text


async def finished_manifest(
    http: httpx.AsyncClient, app: Any, kick_off: httpx.Response, headers: dict[str, str]
) -> dict[str, Any]:
    assert kick_off.status_code == 202, kick_off.text
    status_url = kick_off.headers["Content-Location"]
    await app.state.jobs.run_due()
    answer = await http.get(status_url, headers=headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def contents(
    http: httpx.AsyncClient, manifest: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """type -> sorted ids over the type's files, each file downloaded."""
    found: dict[str, list[str]] = {}
    for item in manifest["output"]:
        answer = await http.get(item["url"], headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert len(lines) == item["count"]
        assert {line["resourceType"] for line in lines} == {item["type"]}
        found.setdefault(item["type"], []).extend(line["id"] for line in lines)
    return {name: sorted(ids) for name, ids in found.items()}


async def test_kick_off_poll_manifest_and_download(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = served
    kick_off = await http.get("$export?_type=Patient,Observation", headers=ASYNC)
    assert kick_off.status_code == 202
    status_url = kick_off.headers["Content-Location"]
    assert status_url.startswith("http://testserver/bulk-export/")
    waiting = await http.get(status_url)
    assert waiting.status_code == 202
    assert waiting.headers["Retry-After"] == "2" and "X-Progress" in waiting.headers
    await app.state.jobs.run_due()
    done = await http.get(status_url)
    assert done.status_code == 200
    manifest = done.json()
    assert manifest["request"].endswith("/fhir/$export?_type=Patient,Observation")
    assert manifest["requiresAccessToken"] is False
    assert manifest["transactionTime"].startswith(START.strftime("%Y-%m-%dT%H:%M:%S"))
    assert manifest["deleted"] == [] and manifest["error"] == []
    assert await contents(http, manifest) == {
        "Observation": ["o0", "o1", "o2", "o3", "o4"],
        "Patient": ["p1", "p2"],
    }


async def test_patient_and_group_level_kick_offs(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, app = served
    everyone = await finished_manifest(
        http, app, await http.get("Patient/$export", headers=ASYNC), {}
    )
    assert (await contents(http, everyone))["Patient"] == ["p1", "p2"]
    assert "Organization" not in await contents(http, everyone)
    group = await http.post(
        "Group/g/$export",
        headers=ASYNC,
        json={
            "resourceType": "Parameters",
            "parameter": [{"name": "_type", "valueString": "Patient,Observation"}],
        },
    )
    members = await finished_manifest(http, app, group, {})
    assert await contents(http, members) == {"Observation": ["o1", "o3"], "Patient": ["p2"]}
    missing = await http.get("Group/nope/$export", headers=ASYNC)
    assert missing.status_code == 404


async def test_kick_off_needs_respond_async(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, _ = served
    answer = await http.get("$export", headers={"Accept": FHIR_JSON})
    assert answer.status_code == 400
    assert "respond-async" in answer.json()["issue"][0]["diagnostics"]


async def test_invalid_parameters_are_refused_unless_lenient(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = served
    strict = await http.get("$export?_type=Patient,Nonsense", headers=ASYNC)
    assert strict.status_code == 400
    assert strict.json()["resourceType"] == "OperationOutcome"
    assert "Nonsense" in strict.json()["issue"][0]["diagnostics"]
    bad_since = await http.get("$export?_since=yesterday", headers=ASYNC)
    assert bad_since.status_code == 400
    lenient = {**ASYNC, "Prefer": "respond-async, handling=lenient"}
    kick_off = await http.get("$export?_type=Patient,Nonsense&_until=2020-01-01", headers=lenient)
    manifest = await finished_manifest(http, app, kick_off, {})
    assert await contents(http, manifest) == {"Patient": ["p1", "p2"]}
    [error] = manifest["error"]
    assert error["type"] == "OperationOutcome" and error["count"] == 2
    outcomes = (await http.get(error["url"])).text.splitlines()
    diagnostics = [json.loads(line)["issue"][0]["diagnostics"] for line in outcomes]
    assert any("Nonsense" in text for text in diagnostics)
    assert any("_until" in text for text in diagnostics)


async def test_polling_faster_than_retry_after_is_429(
    served: tuple[httpx.AsyncClient, Any], clock: MovableClock
) -> None:
    http, _ = served
    status_url = (await http.get("$export", headers=ASYNC)).headers["Content-Location"]
    assert (await http.get(status_url)).status_code == 202
    too_soon = await http.get(status_url)
    assert too_soon.status_code == 429 and too_soon.headers["Retry-After"] == "2"
    clock.move_to(START + timedelta(seconds=3))
    assert (await http.get(status_url)).status_code == 202


async def test_cancel_makes_the_status_and_files_404(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = served
    running = (await http.get("$export", headers=ASYNC)).headers["Content-Location"]
    assert (await http.delete(running)).status_code == 202
    assert (await http.get(running)).status_code == 404
    await app.state.jobs.run_due()
    assert (await http.get(running)).status_code == 404
    kick_off = await http.get("$export?_type=Patient", headers=ASYNC)
    manifest = await finished_manifest(http, app, kick_off, {})
    file_url = manifest["output"][0]["url"]
    assert (await http.get(file_url)).status_code == 200
    assert (await http.delete(kick_off.headers["Content-Location"])).status_code == 202
    assert (await http.get(file_url)).status_code == 404
    assert (await http.get(kick_off.headers["Content-Location"])).status_code == 404


async def test_files_gzip_and_ranges(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, app = served
    kick_off = await http.get("$export?_type=Observation", headers=ASYNC)
    manifest = await finished_manifest(http, app, kick_off, {})
    url = manifest["output"][0]["url"]
    plain = (await http.get(url, headers={"Accept-Encoding": "identity"})).content
    async with http.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        raw = b"".join([chunk async for chunk in zipped.aiter_raw()])
    assert gzip.decompress(raw) == plain
    part = await http.get(url, headers={"Range": "bytes=10-29", "Accept-Encoding": "identity"})
    assert part.status_code == 206 and part.content == plain[10:30]
    assert (await http.get(url.rsplit("/", 1)[0] + "/..%2Fsecret")).status_code == 404


async def test_a_patient_context_token_may_not_kick_off(
    guarded: tuple[httpx.AsyncClient, Any],
) -> None:
    http, _ = guarded
    answer = await http.get("$export", headers={**ASYNC, "Authorization": "Bearer patient-app"})
    assert answer.status_code == 403
    anonymous = await http.get("$export", headers=ASYNC)
    assert anonymous.status_code == 401


async def test_a_system_export_is_confined_to_its_token_and_client(
    guarded: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = guarded
    mine = {"Authorization": "Bearer patients-only"}
    kick_off = await http.get("$export", headers={**ASYNC, **mine})
    manifest = await finished_manifest(http, app, kick_off, mine)
    assert manifest["requiresAccessToken"] is True
    assert await contents(http, manifest, mine) == {"Patient": ["p1", "p2"]}
    status_url = kick_off.headers["Content-Location"]
    theirs = {"Authorization": "Bearer other-client"}
    assert (await http.get(status_url, headers=theirs)).status_code == 404
    assert (await http.get(manifest["output"][0]["url"], headers=theirs)).status_code == 404
    assert (await http.delete(status_url, headers=theirs)).status_code == 404
    assert (await http.get(manifest["output"][0]["url"])).status_code == 401


async def test_too_many_exports_of_one_client_is_429(
    guarded: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = guarded
    mine = {**ASYNC, "Authorization": "Bearer system"}
    assert (await http.get("$export", headers=mine)).status_code == 202
    second = await http.get("$export", headers=mine)
    assert second.status_code == 429 and "Retry-After" in second.headers
    other = {**ASYNC, "Authorization": "Bearer other-client"}
    assert (await http.get("$export", headers=other)).status_code == 202
    await app.state.jobs.run_due()
    assert (await http.get("$export", headers=mine)).status_code == 202


async def test_the_capability_statement_lists_the_export_operations(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, _ = served
    statement = (await http.get("metadata")).json()
    rest = statement["rest"][0]
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    assert {"name": "export", "definition": bulk + "export"} in rest["operation"]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    assert {"name": "export", "definition": bulk + "patient-export"} in by_type["Patient"]
    assert {"name": "export", "definition": bulk + "group-export"} in by_type["Group"]


# --- Found in review; each failed before its fix ---------------------------------------


async def test_another_user_of_the_same_app_cannot_see_or_cancel_an_export(
    guarded: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = guarded
    mine = {**ASYNC, "Authorization": "Bearer user-p1"}
    kick_off = await http.get("Patient/$export", headers=mine)
    manifest = await finished_manifest(http, app, kick_off, {"Authorization": "Bearer user-p1"})
    theirs = {"Authorization": "Bearer user-p2"}
    status_url = kick_off.headers["Content-Location"]
    assert (await http.get(status_url, headers=theirs)).status_code == 404
    for item in manifest["output"]:
        assert (await http.get(item["url"], headers=theirs)).status_code == 404
    assert (await http.delete(status_url, headers=theirs)).status_code == 404


async def test_head_on_a_kick_off_starts_nothing(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, app = served
    answer = await http.head("$export", headers=ASYNC)
    assert answer.status_code == 405
    assert "HEAD" not in answer.headers["allow"]
    # No export is running: a kick-off is still accepted and nothing else was queued.
    assert await app.state.jobs.run_due() == 0


async def test_a_malformed_parameters_body_is_400(served: tuple[httpx.AsyncClient, Any]) -> None:
    http, _ = served
    for body in (
        {"resourceType": "Parameters", "parameter": 5},
        {"resourceType": "Parameters", "parameter": [5]},
    ):
        answer = await http.post("$export", json=body, headers=ASYNC)
        assert answer.status_code == 400, answer.text


async def test_comma_joined_type_filters_are_ored(served: tuple[httpx.AsyncClient, Any]) -> None:
    """export.html: `_typeFilter` is a comma-delimited list of search queries."""
    http, app = served
    both = "Observation?_id=o1,Observation?_id=o2"
    kick_off = await http.get(f"$export?_type=Observation&_typeFilter={both}", headers=ASYNC)
    manifest = await finished_manifest(http, app, kick_off, {})
    assert (await contents(http, manifest)) == {"Observation": ["o1", "o2"]}


async def test_an_export_that_keeps_failing_ends_as_failed_and_frees_its_slot(
    guarded: tuple[httpx.AsyncClient, Any], tmp_path: Path, clock: MovableClock
) -> None:
    http, app = guarded
    system = {"Authorization": "Bearer system"}
    kick_off = await http.get("$export?_type=Patient", headers={**ASYNC, **system})
    assert kick_off.status_code == 202
    # The export folder cannot be made: every chunk fails.
    (tmp_path / "exports").write_text("not a folder")
    for _ in range(40):
        clock.move_to(clock() + timedelta(hours=1))
        await app.state.jobs.run_due()
    answer = await http.get(kick_off.headers["Content-Location"], headers=system)
    assert answer.status_code != 202
    assert answer.json()["resourceType"] == "OperationOutcome"
    again = await http.get("$export?_type=Patient", headers={**ASYNC, **system})
    assert again.status_code == 202


async def test_x_progress_says_what_is_done_in_words(
    served: tuple[httpx.AsyncClient, Any], clock: MovableClock
) -> None:
    http, app = served
    kick_off = await http.get("$export?_type=Patient,Observation", headers=ASYNC)
    status_url = kick_off.headers["Content-Location"]
    first = await http.get(status_url)
    assert first.headers["X-Progress"] == "0 resources written; Patient (1 of 2 types)"
    store = app.state.store
    job = await store.claim_job([EXPORT], "test", clock(), LEASE)
    await run_chunk(store, app.state.exports, clock, job)  # the Patients
    clock.move_to(START + timedelta(seconds=3))
    second = await http.get(status_url)
    assert second.status_code == 202
    assert second.headers["X-Progress"] == "2 resources written; Observation (2 of 2 types)"


async def test_include_associated_data_and_until_over_http(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = served
    target = {"reference": "Observation/o1"}
    for pid, recorded in (("pv1", "2024-01-01T00:00:00Z"), ("pv2", "2024-02-01T00:00:00Z")):
        provenance = {
            "resourceType": "Provenance",
            "id": pid,
            "target": [target],
            "recorded": recorded,
            "agent": [{"who": {"reference": "Organization/org"}}],
        }
        assert (await http.put(f"Provenance/{pid}", json=provenance)).status_code == 201
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "_type", "valueString": "Observation"},
            {"name": "includeAssociatedData", "valueCode": "LatestProvenanceResources"},
        ],
    }
    latest = await finished_manifest(
        http, app, await http.post("$export", headers=ASYNC, json=body), {}
    )
    found = await contents(http, latest)
    assert found["Provenance"] == ["pv2"] and len(found["Observation"]) == 5
    custom = await http.get("$export?includeAssociatedData=_customOnly", headers=ASYNC)
    assert custom.status_code == 400 and "_customOnly" in custom.text
    bad_until = await http.get("$export?_until=tomorrow", headers=ASYNC)
    assert bad_until.status_code == 400 and "_until" in bad_until.text
    past = await finished_manifest(
        http, app, await http.get("$export?_until=2001-01-01T00:00:00Z", headers=ASYNC), {}
    )
    assert past["output"] == []


async def test_a_definitional_group_exports_nothing(
    served: tuple[httpx.AsyncClient, Any],
) -> None:
    http, app = served
    definitional = {
        "resourceType": "Group",
        "id": "kind",
        "type": "person",
        "actual": False,
        "characteristic": [
            {"code": {"text": "weight measured"}, "valueBoolean": True, "exclude": False}
        ],
    }
    assert (await http.put("Group/kind", json=definitional)).status_code == 201
    manifest = await finished_manifest(
        http, app, await http.get("Group/kind/$export", headers=ASYNC), {}
    )
    assert manifest["output"] == []
