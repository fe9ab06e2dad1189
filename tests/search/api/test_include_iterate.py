"""`_include:iterate` is complete or says it is not (R4 search.html#include: "servers
... may limit the number of iterations", and a server that stops early should say so).

A cycle of 200 Patients, each `link`ing the next: iterating from one reaches the other
199, however many rounds that takes. With the bound on included resources set lower
(`max_included`), the Bundle holds that many and an OperationOutcome warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.config import Settings
from tests.search.api.search_helpers import fetch, ids

RING = 200
SMALL_BOUND = 50


def _patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "link": [{"other": {"reference": f"Patient/p{(n + 1) % RING}"}, "type": "seealso"}],
    }


async def _ring(client: httpx.AsyncClient) -> None:
    for n in range(RING):
        answer = await client.put(f"/Patient/p{n}", json=_patient(n))
        assert answer.status_code in (200, 201), answer.text


def _warnings(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        issue
        for entry in bundle.get("entry", [])
        if entry["search"]["mode"] == "outcome"
        for issue in entry["resource"]["issue"]
    ]


async def test_iterate_follows_a_long_cycle_to_its_end(client: httpx.AsyncClient) -> None:
    await _ring(client)
    bundle = await fetch(client, "/Patient", [("_id", "p0"), ("_include:iterate", "Patient:link")])
    assert ids(bundle) == ["p0"]
    assert sorted(ids(bundle, "include")) == sorted(f"p{n}" for n in range(1, RING))
    assert _warnings(bundle) == []


class TestABound:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        return Settings(
            store=str(tmp_path / "fhir.sqlite"), run_jobs=False, max_included=SMALL_BOUND
        )

    async def test_a_cut_is_announced(self, client: httpx.AsyncClient) -> None:
        await _ring(client)
        bundle = await fetch(
            client, "/Patient", [("_id", "p0"), ("_include:iterate", "Patient:link")]
        )
        assert len(ids(bundle, "include")) == SMALL_BOUND
        warnings = _warnings(bundle)
        assert [w["severity"] for w in warnings] == ["warning"]
        assert warnings[0]["code"] == "incomplete"
        assert str(SMALL_BOUND) in warnings[0]["diagnostics"]
