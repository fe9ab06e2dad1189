"""A batch or transaction Bundle's entries read as requests (R4 http.html#transaction,
bundle.html Bundle.entry.request): what each method may name, its resource validated,
its preconditions and patch parsed; and an error named after the entry it is about.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from fhirserver.errors import BadRequest, Contention, FHIRError, Issue, NotSupported
from fhirserver.interactions.patches import Patcher, entry_patcher
from fhirserver.interactions.paths import Target, parse_path
from fhirserver.interactions.preconditions import (
    NO_PRECONDITIONS,
    Preconditions,
    check_body_id,
    if_none_exist_criteria,
    parse_preconditions,
)
from fhirserver.resources import meta
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.validate import validate
from fhirserver.search.query import IndexEntry
from fhirserver.storage.base import Version

Params = list[tuple[str, str]]
T = TypeVar("T")

# R4 http.html#trules: the order a transaction's entries are processed in.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(slots=True)
class Entry:
    """One Bundle.entry as a request; the id fields are filled in by resolution."""

    index: int
    method: str
    url: str
    # request.url's path relative to the base, and what it names.
    path: str
    target: Target
    params: Params
    resource: JSONObject | None = None
    full_url: str | None = None
    preconditions: Preconditions = NO_PRECONDITIONS
    if_none_exist: Params | None = None
    patcher: Patcher | None = None
    # A FHIRPath Patch's Parameters: its values may link to other entries too.
    patch_parameters: JSONObject | None = None
    # The resource this entry writes or reads, once known.
    resource_id: str | None = None
    # A create whose ifNoneExist matched: the stored match, or an earlier entry's create.
    existing: Version | None = None
    same_as: Entry | None = None
    # The current version of what the entry updates, patches or deletes.
    current: Version | None = None
    # The resource's index entries, if worked out beforehand (by an import's worker
    # process); dropped when the transaction rewrites one of its references.
    search_index: tuple[IndexEntry, ...] | None = None

    @property
    def resource_type(self) -> str:
        assert self.target.resource_type is not None
        return self.target.resource_type

    @property
    def writes(self) -> bool:
        return self.method not in ("GET", "HEAD") and self.existing is None and not self.same_as


def read_entries(raw_entries: list[Any], base_url: str, validated: bool = False) -> list[Entry]:
    """The entries of a transaction; `validated` when their resources were already
    checked (by `fhirserver import`'s worker processes)."""
    entries = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(read_entry(index, raw, base_url, validated))
        except FHIRError as exc:
            raise entry_error(exc, index) from None
    return entries


def read_entry(index: int, raw: Any, base_url: str, validated: bool = False) -> Entry:
    """Parse and check one entry: its request, and its resource validated."""
    if not isinstance(raw, dict):
        raise BadRequest("A Bundle entry must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest("The entry has no request", expression="request")
    method, url = request.get("method"), request.get("url")
    # Only a string may be looked up: a JSON list or object is unhashable.
    if not isinstance(method, str) or method not in _ORDER:
        raise BadRequest(f"Unknown request.method {method!r}", expression="request.method")
    if not isinstance(url, str) or not url:
        raise BadRequest("The entry has no request.url", expression="request.url")
    path, params = _split_url(url, base_url)
    full_url = raw.get("fullUrl")
    entry = Entry(
        index,
        method,
        url,
        path,
        parse_path(path),
        params,
        full_url=full_url if isinstance(full_url, str) else None,
        preconditions=parse_preconditions(
            _string(request, "ifMatch"), _string(request, "ifNoneMatch")
        ),
    )
    if_none_exist = _string(request, "ifNoneExist")
    if if_none_exist is not None:
        entry.if_none_exist = if_none_exist_criteria(if_none_exist)
    _check_request(entry, raw.get("resource"), validated)
    return entry


def in_processing_order(entries: Iterable[Entry]) -> list[Entry]:
    """R4 http.html#trules: DELETE, then POST, then PUT / PATCH, then GET / HEAD; in
    the order given within each."""
    return sorted(entries, key=lambda e: _ORDER[e.method])


async def guarded(entry: Entry, step: Awaitable[T]) -> T:
    """Await one entry's step; its error names the entry."""
    try:
        return await step
    except Contention:
        raise  # the whole unit runs again (storage/retry.py): no entry is at fault
    except FHIRError as exc:
        raise entry_error(exc, entry.index) from None


def entry_error(exc: FHIRError, index: int) -> FHIRError:
    """The same error, naming the entry it is about."""
    where = f"Bundle.entry[{index}]"
    issues = [
        Issue(
            f"{where}: {issue.diagnostics}",
            issue.code,
            issue.severity,
            f"{where}.{issue.expression}" if issue.expression else where,
        )
        for issue in exc.issues
    ]
    return FHIRError(f"{where}: {exc}", issues=issues, status=exc.status, headers=exc.headers)


def _string(request: JSONObject, key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"request.{key} must be a string", expression=f"request.{key}")
    return value


def _split_url(url: str, base_url: str) -> tuple[str, Params]:
    """request.url: relative to the base, or absolute on this server's base."""
    if urlsplit(url).scheme:
        if not base_url or not url.startswith(base_url + "/"):
            raise BadRequest(f"request.url {url!r} is not on this server", expression="request.url")
        url = url[len(base_url) :]
    parts = urlsplit(url)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


def _check_request(entry: Entry, resource: Any, validated: bool) -> None:
    """What each method needs (R4 http.html#transaction), and the resource validated."""
    kind, conditional = entry.target.kind, bool(entry.params)
    method = entry.method
    allowed = {
        "POST": kind == "type" and not conditional,
        "PUT": kind == "instance" or (kind == "type" and conditional),
        "PATCH": kind == "instance" or (kind == "type" and conditional),
        "DELETE": kind == "instance" or (kind == "type" and conditional),
        "GET": kind not in ("system-search", "type-search"),
        "HEAD": kind not in ("system-search", "type-search"),
    }
    if kind in ("instance-operation", "type-operation", "system-operation"):
        # Operations run outside a Bundle: ours call a video provider, which a
        # transaction's unit of work must never wait on (DESIGN.md "Side effects").
        raise NotSupported(f"{entry.url}: operations are not supported inside a Bundle")
    if not allowed[method]:
        raise BadRequest(f"{method} {entry.url} is not an interaction a Bundle can hold")
    if entry.target.id is not None:
        meta.check_id(entry.target.id)
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise BadRequest(f"A {method} entry needs a resource", expression="resource")
        if not validated:
            validate(resource, entry.resource_type)
        if method == "PUT" and kind == "instance":
            check_body_id(resource, entry.target.id or "")
        entry.resource = resource
    elif method == "PATCH":
        entry.patcher = entry_patcher(resource)
        if resource.get("resourceType") == "Parameters":
            entry.patch_parameters = resource
