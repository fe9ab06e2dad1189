"""Helpers shared by the HTTP-level search tests (R4 search.html).

Writing resources (PUT at a fixed id, or POST), searching over HTTP, reading what a
searchset Bundle holds, and building the resources the tests seed. Most tests seed a
small, known set of resources with fixed ids, then search and compare the exact set of
ids matched (`search`); the result tests read the Bundle itself (`fetch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpx
import pytest

Params = Sequence[tuple[str, str]] | dict[str, str]


# --- writing -----------------------------------------------------------------------------


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    """PUT a resource at its own id (create-on-update), failing loudly if refused."""
    path = f"/{resource['resourceType']}/{resource['id']}"
    answer = await client.put(path, json=resource)
    assert answer.status_code in (200, 201), (path, answer.status_code, answer.text)
    return str(resource["id"])


async def seed(client: httpx.AsyncClient, resources: Iterable[dict[str, Any]]) -> None:
    """PUT each resource at its own id."""
    for resource in resources:
        await put(client, resource)


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    """POST a resource; the id the server gave it."""
    answer = await client.post(f"/{resource['resourceType']}", json=resource)
    assert answer.status_code == 201, answer.text
    resource_id: str = answer.json()["id"]
    return resource_id


async def delete(client: httpx.AsyncClient, key: str) -> None:
    """DELETE [type]/[id]."""
    assert (await client.delete(f"/{key}")).status_code == 204


def seeded(resources: Iterable[dict[str, Any]]) -> Callable[..., Any]:
    """A fixture: the test client, once `resources` are seeded. Bind it to the fixture's
    name in the test module: `observations = seeded(OBSERVATIONS)`."""

    @pytest.fixture
    async def fixture(client: httpx.AsyncClient) -> httpx.AsyncClient:
        await seed(client, resources)
        return client

    return fixture


# --- reading a searchset Bundle ------------------------------------------------------------


def searchset(answer: httpx.Response) -> dict[str, Any]:
    """The searchset Bundle of a 200 answer."""
    assert answer.status_code == 200, (answer.status_code, answer.text)
    bundle: dict[str, Any] = answer.json()
    assert bundle["resourceType"] == "Bundle", bundle
    assert bundle["type"] == "searchset", bundle
    return bundle


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    """The entries of that search mode (match, include or outcome), in order."""
    return [e for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def resources_of(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in entries(bundle, mode)]


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [resource["id"] for resource in resources_of(bundle, mode)]


def outcomes(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return entries(bundle, "outcome")


def link(bundle: dict[str, Any], relation: str) -> str | None:
    """The url of the Bundle's link of that relation, if any (at most one)."""
    found = [item["url"] for item in bundle.get("link", []) if item["relation"] == relation]
    assert len(found) <= 1, bundle["link"]
    return found[0] if found else None


# --- searching ---------------------------------------------------------------------------


def _as_list(params: Params) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, dict) else list(params)


async def fetch(
    client: httpx.AsyncClient, url: str, params: Params | None = None, **kwargs: Any
) -> dict[str, Any]:
    """GET url?params: the searchset Bundle."""
    # No params at all (not an empty list), or httpx drops the query of a paging link.
    answer = await client.get(url, params=_as_list(params) if params else None, **kwargs)
    return searchset(answer)


async def matches(client: httpx.AsyncClient, url: str, params: Params) -> list[str]:
    """GET url?params: the sorted ids of the matches; no parameter may have been ignored."""
    bundle = await fetch(client, url, params)
    assert outcomes(bundle) == [], (params, outcomes(bundle))
    return sorted(ids(bundle))


async def search(client: httpx.AsyncClient, resource_type: str, params: Params) -> set[str]:
    """GET [type]?params: the ids of the matches; no parameter may have been ignored."""
    return set(await matches(client, f"/{resource_type}", params))


async def search_error(
    client: httpx.AsyncClient, resource_type: str, params: Params, status: int = 400
) -> dict[str, Any]:
    """GET [type]?params that must be refused: the status and an OperationOutcome."""
    answer = await client.get(f"/{resource_type}", params=_as_list(params))
    assert answer.status_code == status, (params, answer.status_code, answer.text)
    outcome: dict[str, Any] = answer.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert outcome["issue"], outcome
    assert all(issue["severity"] in ("error", "fatal") for issue in outcome["issue"]), outcome
    return outcome


# --- resources ---------------------------------------------------------------------------


def build(resource_type: str, **elements: Any) -> dict[str, Any]:
    """A resource of that type with those elements, leaving out the ones given as None."""
    present = {name: value for name, value in elements.items() if value is not None}
    return {"resourceType": resource_type, **present}


def ref(key: str) -> dict[str, str]:
    return {"reference": key}


def patient(
    family: str | None = None,
    *,
    given: str | None = None,
    gender: str | None = None,
    birth: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Patient with at most one name, of that family and given name."""
    made: dict[str, Any] = {"resourceType": "Patient", **extra}
    if family is not None or given is not None:
        name: dict[str, Any] = {}
        if family is not None:
            name["family"] = family
        if given is not None:
            name["given"] = [given]
        made["name"] = [name]
    if gender is not None:
        made["gender"] = gender
    if birth is not None:
        made["birthDate"] = birth
    return made


def observation(code: str = "1234-5", **extra: Any) -> dict[str, Any]:
    """A final Observation coded with that LOINC code."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        **extra,
    }


def encounter(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, **extra}


def risk(
    rid: str | None = None, *, subject: str = "Patient/p1", **prediction: Any
) -> dict[str, Any]:
    """A RiskAssessment with one prediction of those elements (leaving out the ones given as
    None; no prediction if none is left)."""
    present = {name: value for name, value in prediction.items() if value is not None}
    return build(
        "RiskAssessment",
        id=rid,
        status="final",
        subject=ref(subject),
        prediction=[present] if present else None,
    )
