"""Bundles the REST layer answers with (R4 bundle.html)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request

from fhirserver.interactions.history import HistoryPage
from fhirserver.resources.meta import format_instant
from fhirserver.rest.headers import etag
from fhirserver.storage.base import Version

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_bundle(request: Request, base_url: str, page: HistoryPage) -> dict[str, Any]:
    # Links are built on base_url, which is the public one behind a proxy.
    path = request.url.path.removeprefix(request.app.state.settings.base_path)
    links = [{"relation": "self", "url": f"{base_url}{path}?{request.url.query}".rstrip("?")}]
    if page.next_cursor is not None:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_cursor"]
        query = urlencode([*params, ("_cursor", page.next_cursor)])
        links.append({"relation": "next", "url": f"{base_url}{path}?{query}"})
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": links,
        "entry": [_history_entry(base_url, version) for version in page.versions],
    }


def _history_entry(base_url: str, version: Version) -> dict[str, Any]:
    reference = f"{version.resource_type}/{version.id}"
    status = _STATUS[version.method]
    if version.method == "PUT" and version.version == 1:
        status = "201 Created"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{reference}"}
    if version.body is not None:
        # Stored JSON goes into the Bundle as it is, without a parse and re-serialise.
        entry["resource"] = orjson.Fragment(version.body)
    entry["request"] = {
        "method": version.method,
        "url": version.resource_type if version.method == "POST" else reference,
    }
    entry["response"] = {
        "status": status,
        "etag": etag(version.version),
        "lastModified": format_instant(version.last_updated),
    }
    return entry
