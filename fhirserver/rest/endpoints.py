"""One function per FHIR interaction: read the HTTP request, call the interaction, answer."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.auth.access import Access
from fhirserver.config import Settings
from fhirserver.errors import BadRequest, Issue
from fhirserver.interactions import crud
from fhirserver.interactions.capabilities import capability_statement
from fhirserver.interactions.checked import (
    CheckedResource,
    check_bundle,
    check_resource,
    portable,
)
from fhirserver.interactions.history import history
from fhirserver.interactions.patches import Patcher, fhirpath_patch, json_patch, merge_patch
from fhirserver.interactions.preconditions import if_none_exist_criteria
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.search import search, system_scope
from fhirserver.interactions.transaction import process
from fhirserver.resources import codec
from fhirserver.rest import headers
from fhirserver.rest.bundles import history_bundle, response_bundle, searchset_bundle
from fhirserver.rest.errors import operation_outcome
from fhirserver.rest.negotiation import (
    FORM,
    JSON_PATCH,
    MERGE_PATCH,
    PLAIN_JSON,
    RESOURCE_TYPES,
    Format,
    media_type,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.responses import SHAPE_PARAMS, fhir_response, resource_response, write_response
from fhirserver.search.params import registry
from fhirserver.search.result_params import FORMAT_PARAMS
from fhirserver.storage.base import Store, Version


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _access(request: Request) -> Access:
    """The request's `Access`, set by the dispatcher from its token (routes.dispatch)."""
    access: Access = request.state.access
    return access


def _writes(request: Request) -> WriteContext:
    """The app's write rules and clock, for a client's write under its token."""
    context: WriteContext = request.app.state.writes
    return context.for_access(_access(request))


def base_url(request: Request) -> str:
    settings = _settings(request)
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}{settings.base_path}"


def read_options(request: Request) -> ReadOptions:
    """What a read of this request runs under: the server's page sizes, the request's
    base URL and its `Prefer: handling`."""
    settings = _settings(request)
    return ReadOptions(
        base_url=base_url(request),
        strict=headers.strict_handling(request),
        search_page_size=settings.search_page_size,
        history_page_size=settings.history_page_size,
        max_page_size=settings.max_page_size,
        max_included=settings.max_included,
        access=_access(request),
        known=request.app.state.writes.known(),
    )


def _criteria(request: Request) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request.query_params.multi_items() if k not in SHAPE_PARAMS]


async def _checked_body(request: Request, resource_type: str) -> CheckedResource:
    """The body parsed, validated and indexed: in a worker process when it is large, so
    that other requests do not wait on it (issue 20)."""
    require_content_type(request, RESOURCE_TYPES)
    body = await read_body(request, _settings(request).max_body_bytes)
    writes = _writes(request)
    known = portable(writes.known() or registry())
    return await writes.work(check_resource, body, resource_type, known, cost=len(body))


def _location(request: Request, version: Version) -> str:
    return f"{base_url(request)}/{version.resource_type}/{version.id}/_history/{version.version}"


async def capabilities(request: Request) -> Response:
    fmt = response_format(request)
    oauth = getattr(request.app.state, "oauth_uris", None)
    return fhir_response(
        capability_statement(
            base_url(request), _writes(request).clock(), oauth, _writes(request).known()
        ),
        fmt,
    )


async def read(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = response_format(request)
    version = await crud.read(_store(request), resource_type, resource_id, _access(request))
    version_headers = headers.version_headers(version)
    if headers.not_modified(request, version):
        return Response(status_code=304, headers=version_headers)
    assert version.body is not None
    return await resource_response(request, version.body, fmt, headers=version_headers)


async def vread(request: Request, resource_type: str, resource_id: str, vid: str) -> Response:
    fmt = response_format(request)
    version = await crud.vread(_store(request), resource_type, resource_id, vid, _access(request))
    assert version.body is not None
    return await resource_response(
        request, version.body, fmt, headers=headers.version_headers(version)
    )


async def create(request: Request, resource_type: str) -> Response:
    fmt = response_format(request)
    resource = await _checked_body(request, resource_type)
    if_none_exist = request.headers.get("if-none-exist")
    criteria = None
    if if_none_exist is not None:
        # R4 http.html#ccreate: the header holds the query part of a search URL.
        criteria = if_none_exist_criteria(if_none_exist)
    result = await crud.create(_store(request), _writes(request), resource_type, resource, criteria)
    return await _write_answer(request, fmt, result, "Created")


async def update(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = response_format(request)
    resource = await _checked_body(request, resource_type)
    result = await crud.update(
        _store(request),
        _writes(request),
        resource_type,
        resource_id,
        resource,
        headers.preconditions(request),
    )
    return await _write_answer(request, fmt, result, "Updated")


async def conditional_update(request: Request, resource_type: str) -> Response:
    fmt = response_format(request)
    resource = await _checked_body(request, resource_type)
    result = await crud.conditional_update(
        _store(request),
        _writes(request),
        resource_type,
        _criteria(request),
        resource,
        headers.preconditions(request),
    )
    return await _write_answer(request, fmt, result, "Updated")


async def _patcher(request: Request) -> Patcher:
    # R4 http.html#patch: JSON Patch, or FHIRPath Patch as a Parameters resource; and
    # JSON Merge Patch (RFC 7396), an extension to R4 (README "Patch").
    require_content_type(request, frozenset({JSON_PATCH, MERGE_PATCH, *RESOURCE_TYPES}))
    raw = await read_body(request, _settings(request).max_body_bytes)
    body = await _writes(request).work(codec.loads, raw, cost=len(raw))
    kind = media_type(request)
    if kind == JSON_PATCH:
        return json_patch(body)
    if kind == MERGE_PATCH or (
        # Plain JSON holding an object that is no resource: a partial resource, as
        # fhirpy's patch() sends it; Aidbox takes it as a merge patch too.
        kind == PLAIN_JSON and isinstance(body, dict) and "resourceType" not in body
    ):
        return merge_patch(body)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        return fhirpath_patch(body)
    raise BadRequest("A FHIRPath Patch must be a Parameters resource")


async def patch(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = response_format(request)
    result = await crud.patch(
        _store(request),
        _writes(request),
        resource_type,
        resource_id,
        await _patcher(request),
        headers.preconditions(request),
    )
    return await _write_answer(request, fmt, result, "Patched")


async def conditional_patch(request: Request, resource_type: str) -> Response:
    fmt = response_format(request)
    result = await crud.conditional_patch(
        _store(request),
        _writes(request),
        resource_type,
        _criteria(request),
        await _patcher(request),
        headers.preconditions(request),
    )
    return await _write_answer(request, fmt, result, "Patched")


async def delete(request: Request, resource_type: str, resource_id: str) -> Response:
    fmt = response_format(request)
    tombstone = await crud.delete(
        _store(request),
        _writes(request),
        resource_type,
        resource_id,
        headers.preconditions(request),
    )
    return _delete_answer(request, fmt, tombstone)


async def conditional_delete(request: Request, resource_type: str) -> Response:
    fmt = response_format(request)
    tombstone = await crud.conditional_delete(
        _store(request),
        _writes(request),
        resource_type,
        _criteria(request),
        headers.preconditions(request),
    )
    return _delete_answer(request, fmt, tombstone)


async def bundle(request: Request) -> Response:
    """POST [base] with a batch or transaction Bundle (R4 http.html#transaction)."""
    fmt = response_format(request)
    require_content_type(request, RESOURCE_TYPES)
    body = await read_body(request, _settings(request).max_body_bytes)
    options = read_options(request)
    writes = _writes(request)
    # Parsed and its entries validated in a worker process when large (issue 20).
    checked = await writes.work(check_bundle, body, options.base_url, cost=len(body))
    results = await process(_store(request), writes, checked, options)
    answer = response_bundle(
        str(checked.bundle["type"]), options.base_url, results, headers.return_preference(request)
    )
    return fhir_response(answer, fmt)


async def history_endpoint(
    request: Request, resource_type: str | None = None, resource_id: str | None = None
) -> Response:
    fmt = response_format(request)
    options = read_options(request)
    page = await history(
        _store(request),
        _criteria(request),
        options,
        resource_type=resource_type,
        resource_id=resource_id,
    )
    bundle = history_bundle(options.base_url, _path(request), _link_params(request), page)
    return fhir_response(bundle, fmt)


async def _write_answer(
    request: Request, fmt: Format, result: crud.WriteResult, verb: str
) -> Response:
    version = result.version
    response_headers = headers.version_headers(version)
    location = _location(request, version)
    if result.created:
        response_headers["Location"] = location
        status = 201
    else:
        response_headers["Content-Location"] = location
        status = 200
    message = f"{verb} {version.resource_type}/{version.id} version {version.version}"
    if not result.created and verb == "Created":
        message = f"Matched existing {version.resource_type}/{version.id}; nothing created"
    return await write_response(
        request,
        headers.return_preference(request),
        version.body,
        fmt,
        status,
        response_headers,
        message,
    )


def _delete_answer(request: Request, fmt: Format, tombstone: Version | None) -> Response:
    response_headers = headers.version_headers(tombstone) if tombstone else {}
    if headers.return_preference(request) != "OperationOutcome":
        return Response(status_code=204, headers=response_headers)
    message = (
        f"Deleted {tombstone.resource_type}/{tombstone.id}"
        if tombstone
        else "Nothing to delete: no current resource matched"
    )
    outcome = operation_outcome([Issue(message, "informational", "information")])
    return fhir_response(outcome, fmt, 200, response_headers)


async def search_type(request: Request, resource_type: str) -> Response:
    return await _search(request, (resource_type,), await _search_params(request))


async def search_system(request: Request) -> Response:
    params = await _search_params(request)
    types, criteria = system_scope(params)
    return await _search(request, types, criteria, links=params)


async def search_compartment(
    request: Request, compartment: str, owner_id: str, resource_type: str
) -> Response:
    params = await _search_params(request)
    return await _search(request, (resource_type,), params, (compartment, owner_id))


async def _search_params(request: Request) -> list[tuple[str, str]]:
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        # POST [type]/_search: parameters in a form body as well as in the URL.
        require_content_type(request, frozenset({FORM}))
        body = await read_body(request, _settings(request).max_body_bytes)
        try:
            params += parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("The form body is not valid UTF-8") from None
    return params


async def _search(
    request: Request,
    types: tuple[str, ...],
    params: list[tuple[str, str]],
    compartment: tuple[str, str] | None = None,
    links: list[tuple[str, str]] | None = None,
) -> Response:
    """`links`: the parameters to repeat in the Bundle's links, if not `params`."""
    fmt = response_format(request)
    options = read_options(request)
    query, result = await search(_store(request), types, params, options, compartment)
    path = _path(request).removesuffix("/_search")
    visible = _link_params(request, links or params)
    return fhir_response(searchset_bundle(options.base_url, path, visible, query, result), fmt)


def _path(request: Request) -> str:
    """The request's path under the FHIR base, for links on the public base URL."""
    return request.url.path.removeprefix(_settings(request).base_path).rstrip("/")


def _link_params(
    request: Request, params: list[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """The parameters a Bundle's links repeat: all but the answer's format."""
    given = request.query_params.multi_items() if params is None else params
    return [(k, v) for k, v in given if k not in FORMAT_PARAMS]
