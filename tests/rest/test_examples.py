"""Every official R4 example through create, read, update, history and delete.

R4 http.html#create, #read, #update, #history, #delete; json.html#primitive (decimals keep
their exact text); resource.html#Meta (a server sets versionId and lastUpdated and keeps
the rest of meta, such as tags and profiles).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from fhirserver.app import create_app
from fhirserver.config import Settings
from tests.resources.test_invariants import EXPECTED_INVALID_EXAMPLES

FHIR_JSON = "application/fhir+json"
EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "r4" / "examples"
# Invalid R4: Questionnaire.item.linkId (1..1) is missing, so the server must refuse it.
INVALID_EXAMPLE = "Questionnaire-qs1.json"
ROUND_TRIP_TAG = {"system": "urn:fhirserver:test", "code": "round-trip"}
SERVER_META = ("versionId", "lastUpdated")

EXAMPLE_FILES = sorted(path.name for path in EXAMPLES.glob("*.json"))
# R4 subscription.html: the server owns Subscription.status (requested -> active, and
# `error` is never the client's), so these do not round-trip as sent
# (tests/subscriptions/test_subscription_rules.py covers them).
SERVER_OWNED_STATUS = ("Subscription-example.json", "Subscription-example-error.json")
# Invalid R4 by an invariant (the table lists each with the constraint it breaks).
VALID_EXAMPLES = [
    name
    for name in EXAMPLE_FILES
    if name != INVALID_EXAMPLE
    and name not in SERVER_OWNED_STATUS
    and name not in EXPECTED_INVALID_EXAMPLES
]

# The async tests share one event loop, so that they can share one app and store.
module_loop = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Number:
    """A JSON number as its source text: 1.50 and 1.5 differ, as FHIR decimals do."""

    text: str


def parse(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Number, parse_int=Number)


def _number_text(value: Any) -> Any:
    if isinstance(value, Number):
        return orjson.Fragment(value.text)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dump(value: Any) -> bytes:
    """JSON text with every number written exactly as it was parsed."""
    return orjson.dumps(value, default=_number_text, option=orjson.OPT_PASSTHROUGH_DATACLASS)


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource minus what the server assigns: id, meta.versionId, meta.lastUpdated."""
    stripped = {key: value for key, value in resource.items() if key != "id"}
    if "meta" in stripped:
        meta = {k: v for k, v in stripped["meta"].items() if k not in SERVER_META}
        if meta:
            stripped["meta"] = meta
        else:
            del stripped["meta"]
    return stripped


def with_tag(resource: dict[str, Any], resource_id: str) -> dict[str, Any]:
    """A harmless change for the update: the server's id and one more meta.tag."""
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), ROUND_TRIP_TAG]
    return {**resource, "id": resource_id, "meta": meta}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def examples_client(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    # Default body limit: the conftest settings' 64 KiB is too small for some examples.
    store = tmp_path_factory.mktemp("examples") / "fhir.sqlite"
    app = create_app(Settings(store=str(store)))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=30,
        ) as http,
    ):
        yield http


def test_examples_are_there() -> None:
    assert len(EXAMPLE_FILES) == 717, f"expected 717 examples in {EXAMPLES}"


@module_loop
@pytest.mark.parametrize("name", VALID_EXAMPLES)
async def test_example_round_trip(examples_client: httpx.AsyncClient, name: str) -> None:
    http = examples_client
    raw = (EXAMPLES / name).read_bytes()
    sent = parse(raw)
    resource_type = sent["resourceType"]
    expected = without_server_meta(sent)

    created = await http.post(f"/{resource_type}", content=raw)
    assert created.status_code == 201, created.text
    resource_id = created.json()["id"]
    assert without_server_meta(parse(created.content)) == expected

    read = await http.get(f"/{resource_type}/{resource_id}")
    assert read.status_code == 200, read.text
    first = parse(read.content)
    assert first["id"] == resource_id
    assert first["meta"]["versionId"] == "1"
    assert without_server_meta(first) == expected

    changed = with_tag(sent, resource_id)
    updated = await http.put(f"/{resource_type}/{resource_id}", content=dump(changed))
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    second = parse((await http.get(f"/{resource_type}/{resource_id}")).content)
    assert second["meta"]["versionId"] == "2"
    assert without_server_meta(second) == without_server_meta(changed)

    history = await http.get(f"/{resource_type}/{resource_id}/_history")
    assert history.status_code == 200, history.text
    bundle = parse(history.content)
    assert bundle["type"] == "history"
    assert bundle["total"] == Number("2")
    versions = [entry["resource"] for entry in bundle["entry"]]
    assert [v["meta"]["versionId"] for v in versions] == ["2", "1"]
    assert versions == [second, first]

    deleted = await http.delete(f"/{resource_type}/{resource_id}")
    assert deleted.status_code == 204, deleted.text
    gone = await http.get(f"/{resource_type}/{resource_id}")
    assert gone.status_code == 410, gone.text
    assert gone.json()["resourceType"] == "OperationOutcome"


@module_loop
async def test_invalid_example_is_refused(examples_client: httpx.AsyncClient) -> None:
    raw = (EXAMPLES / INVALID_EXAMPLE).read_bytes()
    response = await examples_client.post("/Questionnaire", content=raw)
    assert response.status_code in (400, 422), response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(
        "linkId" in " ".join([issue.get("diagnostics", ""), *issue.get("expression", [])])
        for issue in outcome["issue"]
    ), outcome


@module_loop
@pytest.mark.parametrize("name", sorted(EXPECTED_INVALID_EXAMPLES))
async def test_examples_breaking_an_invariant_are_refused(
    examples_client: httpx.AsyncClient, name: str
) -> None:
    raw = (EXAMPLES / name).read_bytes()
    response = await examples_client.post(f"/{name.split('-')[0]}", content=raw)
    assert response.status_code == 422, response.text
    key = EXPECTED_INVALID_EXAMPLES[name][0]
    assert any(key in issue["diagnostics"] for issue in response.json()["issue"])
