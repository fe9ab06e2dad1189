"""Bundles the REST layer answers with (R4 bundle.html)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import orjson

from fhirserver.errors import Issue
from fhirserver.interactions.history import HistoryPage
from fhirserver.interactions.transaction import EntryResult
from fhirserver.interactions.transaction_entries import Entry
from fhirserver.resources import codec
from fhirserver.resources.elements import select_elements, summarize
from fhirserver.resources.meta import format_instant
from fhirserver.rest.errors import operation_outcome
from fhirserver.rest.headers import etag
from fhirserver.search.query import SearchQuery
from fhirserver.search.result_params import FORMAT_PARAMS
from fhirserver.storage.base import SearchResult, Version

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def history_bundle(
    base_url: str, path: str, params: list[tuple[str, str]], page: HistoryPage
) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = _links(f"{base_url}{path}", params, page.next_cursor, None)
    bundle["entry"] = [_history_entry(base_url, version) for version in page.versions]
    return bundle


def _links(
    url: str, params: list[tuple[str, str]], next_cursor: str | None, previous: str | None
) -> list[dict[str, str]]:
    """self, next and previous (bundle.html#paging). `url` is built on the public base
    URL behind a proxy; paging repeats the parameters with another `_cursor`."""
    kept = [(k, v) for k, v in params if k != "_cursor"]
    links = [{"relation": "self", "url": _with_query(url, params)}]
    for relation, cursor in (("next", next_cursor), ("previous", previous)):
        if cursor is not None:
            links.append(
                {"relation": relation, "url": _with_query(url, [*kept, ("_cursor", cursor)])}
            )
    return links


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


def searchset_bundle(
    base_url: str,
    path: str,
    params: list[tuple[str, str]],
    query: SearchQuery,
    result: SearchResult,
) -> dict[str, Any]:
    """A searchset (search.html#return): matches, then includes, then what was ignored."""
    # Links name only what the search used (search.html#return): not what it ignored.
    unused = {name for name, _ in query.ignored}
    used = [(k, v) for k, v in params if k not in unused]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = _links(f"{base_url}{path}", used, result.next_cursor, result.previous_cursor)
    entries = [_search_entry(base_url, v, "match", query) for v in result.matches]
    entries += [_search_entry(base_url, v, "include", query) for v in result.included]
    issues = [
        Issue(f"Ignored {name}: {why}", "not-supported", "warning", name)
        for name, why in query.ignored
    ]
    if not result.included_complete:
        # search.html#include: a server may limit what it includes; the client is told.
        issues.append(
            Issue(
                f"Included resources stop at {query.max_included} per page: _include / "
                "_revinclude did not bring in everything they lead to",
                "incomplete",
                "warning",
            )
        )
    if issues:
        outcome = operation_outcome(issues)
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _with_query(url: str, params: list[tuple[str, str]]) -> str:
    return f"{url}?{urlencode(params)}" if params else url


def _search_entry(base_url: str, version: Version, mode: str, query: SearchQuery) -> dict[str, Any]:
    assert version.body is not None
    resource: Any = orjson.Fragment(version.body)
    if query.summary not in (None, "false") or query.elements:
        shaped = codec.load_object(version.body)
        if query.summary not in (None, "false"):
            shaped = summarize(shaped, query.summary)
        if query.elements:
            shaped = select_elements(shaped, query.elements)
        resource = shaped
    return {
        "fullUrl": f"{base_url}/{version.resource_type}/{version.id}",
        "resource": resource,
        "search": {"mode": mode},
    }


def response_bundle(
    kind: str, base_url: str, results: list[EntryResult], preference: str
) -> dict[str, Any]:
    """A batch-response or transaction-response (R4 http.html#transaction-response):
    one entry per request entry, in request order; resources as Prefer: return= asks."""
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response_entry(base_url, result, preference) for result in results],
    }


def _response_entry(base_url: str, result: EntryResult, preference: str) -> dict[str, Any]:
    status = f"{result.status} {HTTPStatus(result.status).phrase}"
    response: dict[str, Any] = {"status": status}
    entry: dict[str, Any] = {}
    if result.error is not None:
        response["outcome"] = operation_outcome(result.error.issues)
        return {"response": response}
    method = result.entry.method if result.entry else "GET"
    version = result.version
    if version is not None:
        reference = f"{version.resource_type}/{version.id}"
        entry["fullUrl"] = f"{base_url}/{reference}"
        if method != "GET" and method != "HEAD" and not version.deleted:
            response["location"] = f"{reference}/_history/{version.version}"
        response["etag"] = etag(version.version)
        response["lastModified"] = format_instant(version.last_updated)
    resource = _response_resource(base_url, result, preference)
    if resource is not None and method != "HEAD":
        entry["resource"] = resource
    if method not in ("GET", "HEAD") and preference == "OperationOutcome":
        message = f"{method} {result.entry.url if result.entry else ''}: {status}"
        response["outcome"] = operation_outcome([Issue(message, "informational", "information")])
    entry["response"] = response
    return entry


def _response_resource(base_url: str, result: EntryResult, preference: str) -> Any:
    if result.search is not None and result.entry is not None:
        query, found = result.search
        path, params = _entry_path(result.entry)
        return searchset_bundle(base_url, path, params, query, found)
    if result.history is not None and result.entry is not None:
        path, params = _entry_path(result.entry)
        return history_bundle(base_url, path, params, result.history)
    version = result.version
    if version is None or version.body is None or result.status == 304:
        return None
    reading = result.entry is None or result.entry.method in ("GET", "HEAD")
    if reading or preference == "representation":
        return orjson.Fragment(version.body)
    return None


def _entry_path(entry: Entry) -> tuple[str, list[tuple[str, str]]]:
    """A GET entry's path under the base and its parameters, for the links of the
    Bundle it answers with."""
    path = "/" + entry.path.strip("/")
    return path.rstrip("/"), [(k, v) for k, v in entry.params if k not in FORMAT_PARAMS]
