"""Helpers shared by the HTTP-level search tests (R4 search.html).

Each test seeds a small, known set of resources with fixed ids (PUT), then searches
over HTTP and compares the exact set of ids matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import httpx

Params = Sequence[tuple[str, str]] | dict[str, str]


async def seed(client: httpx.AsyncClient, resources: Iterable[dict[str, Any]]) -> None:
    """PUT each resource at its own id (create-on-update), failing loudly if refused."""
    for resource in resources:
        path = f"/{resource['resourceType']}/{resource['id']}"
        answer = await client.put(path, json=resource)
        assert answer.status_code in (200, 201), (path, answer.status_code, answer.text)


def ids(bundle: dict[str, Any]) -> set[str]:
    """The ids of the matches (search.mode = match) of a searchset Bundle."""
    assert bundle["resourceType"] == "Bundle", bundle
    assert bundle["type"] == "searchset", bundle
    return {
        entry["resource"]["id"]
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode") == "match"
    }


def _as_list(params: Params) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, dict) else list(params)


async def search(client: httpx.AsyncClient, resource_type: str, params: Params) -> set[str]:
    """GET [type]?params: asserts a 200 searchset with no ignored parameter, returns match ids."""
    answer = await client.get(f"/{resource_type}", params=_as_list(params))
    assert answer.status_code == 200, (params, answer.status_code, answer.text)
    bundle = answer.json()
    outcomes = [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "outcome"]
    assert not outcomes, (params, outcomes)
    return ids(bundle)


async def search_error(
    client: httpx.AsyncClient, resource_type: str, params: Params, status: int = 400
) -> dict[str, Any]:
    """GET [type]?params that must be refused: the status and an OperationOutcome."""
    answer = await client.get(f"/{resource_type}", params=_as_list(params))
    assert answer.status_code == status, (params, answer.status_code, answer.text)
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert outcome["issue"], outcome
    assert all(issue["severity"] in ("error", "fatal") for issue in outcome["issue"]), outcome
    return outcome
