"""An Implementation Guide's SearchParameters (R4 searchparameter.html; US Core 3.1.0
SearchParameter-us-core-race), stored by `ig load`, join the server's search parameters
at its next start: they index writes, answer searches and appear in the
CapabilityStatement (R4 capabilitystatement.html: rest.resource.searchParam); resources
stored before are indexed by `reindex`. On every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.interactions import crud
from fhirserver.interactions.ig_load import load_package, stored_registry
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.package import read_package
from fhirserver.storage.reindex import reindex
from tests.backends import Backend
from tests.conftest import FHIR_JSON, SHARED_DATA

RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
RACE_PARAM = "http://hl7.org/fhir/us/core/SearchParameter/us-core-race"


def _patient(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "extension": [
            {
                "url": RACE,
                "extension": [
                    {
                        "url": "ombCategory",
                        "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": code},
                    },
                    {"url": "text", "valueString": code},
                ],
            }
        ],
    }


@pytest.fixture
async def with_us_core(
    settings: Settings, test_backend: Backend
) -> AsyncIterator[httpx.AsyncClient]:
    """A server started on a store US Core was loaded into, with one Patient stored
    before the load (so only a reindex indexes it by race)."""
    store = test_backend.store
    await store.open()
    await crud.create(store, WriteContext(), "Patient", _patient("2106-3"))
    package = read_package(SHARED_DATA / "ig" / "hl7.fhir.us.core-3.1.0.tgz")
    await load_package(store, WriteContext().as_server(), package)
    await store.close()
    app = create_app(settings, store=store)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver/fhir",
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        ) as http,
    ):
        yield http


async def _ids(client: httpx.AsyncClient, query: str) -> set[str]:
    answer = await client.get(f"/Patient?{query}")
    assert answer.status_code == 200, answer.text
    return {e["resource"]["id"] for e in answer.json().get("entry", ())}


async def test_an_ig_search_parameter_searches_and_is_listed(
    with_us_core: httpx.AsyncClient, test_backend: Backend
) -> None:
    client = with_us_core
    asian = (await client.post("/Patient", json=_patient("2028-9"))).json()["id"]
    assert await _ids(client, "race=2028-9") == {asian}
    strict = await client.get("/Patient?race=2028-9", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 200
    # Stored before the load: found once reindexed with the joined parameters.
    assert await _ids(client, "race=2106-3") == set()
    store = test_backend.store
    await reindex(store, known=await stored_registry(store))
    assert len(await _ids(client, "race=2106-3")) == 1
    statement = (await client.get("/metadata")).json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    listed = {p["name"]: p.get("definition") for p in patient["searchParam"]}
    assert listed["race"] == RACE_PARAM


async def test_without_an_ig_race_is_unknown(client: httpx.AsyncClient) -> None:
    answer = await client.get("/Patient?race=2028-9", headers={"Prefer": "handling=strict"})
    assert answer.status_code == 400


async def test_an_ig_parameter_with_a_long_value_is_found_and_matched_once(
    with_us_core: httpx.AsyncClient,
) -> None:
    """A value past the index cut (search/extract.py INDEX_CUT) is confirmed on the
    resource by the IG's own parameter, in a search and in a conditional create
    (http.html#ccreate: one match is that match, not a second resource)."""
    client = with_us_core
    long = "c" * 300
    one = (await client.post("/Patient", json=_patient(long + "1"))).json()["id"]
    await client.post("/Patient", json=_patient(long + "2"))
    assert await _ids(client, f"race={long}1") == {one}
    again = await client.post(
        "/Patient", json=_patient(long + "1"), headers={"If-None-Exist": f"race={long}1"}
    )
    assert again.status_code == 200 and again.json()["id"] == one
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:4f7a0e1c-0000-4000-8000-000000000001",
                "resource": _patient(long + "1"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"race={long}1"},
            }
        ],
    }
    answer = await client.post("", json=bundle)
    assert answer.status_code == 200, answer.text
    assert answer.json()["entry"][0]["response"]["status"].startswith("200")
    assert await _ids(client, f"race={long}1") == {one}
