"""Bulk Data export over HTTP (Bulk Data Access IG 2.0.0 export.html): the kick-off at
`[base]/$export`, `[base]/Patient/$export` and `[base]/Group/[id]/$export`, and outside
the FHIR base the status URL (`/bulk-export/{id}`: poll, cancel) and the files
(`/bulk-export/{id}/{file}`).

Authorization (export.html "Authorization"; SMART backend-services.html): with
authorization on, a kick-off needs a `system/` or `user/` token (a patient-context token
reaches one patient: it has `$everything`, not bulk export); the export reads only what
that token may search; the status URL, cancel and the files answer only a token of the
same client (to anyone else the export does not exist).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import Context
from fhirserver.bulk.export_files import FILE_NAME
from fhirserver.bulk.export_job import (
    DONE,
    FAILED,
    ExportConfig,
    cancel_export,
    export_file,
    export_status,
    kick_off,
    manifest,
    progress_text,
    running_exports,
)
from fhirserver.bulk.export_request import (
    GROUP,
    PATIENT,
    SYSTEM,
    compartment_of,
    member_ids,
    parse_export,
)
from fhirserver.clock import Clock
from fhirserver.errors import BadRequest, FHIRError, Forbidden, NotFound, Unprocessable
from fhirserver.interactions import crud
from fhirserver.resources import codec
from fhirserver.rest.authorization import request_access
from fhirserver.rest.endpoints import base_url
from fhirserver.rest.headers import http_date
from fhirserver.rest.negotiation import RESOURCE_TYPES, read_body, require_content_type
from fhirserver.rest.negotiation import response_format as _response_format
from fhirserver.storage.base import Store

NDJSON = "application/fhir+ndjson"
# How long a client should wait between polls (export.html "Response - In-Progress
# Status": Retry-After); polling sooner is answered 429.
RETRY_AFTER_SECONDS = 2
# The record kind of a status URL's last poll.
POLLED = "export-polled"
_GZIP_BLOCK = 64 * 1024


class TooManyRequests(FHIRError):
    status, code = 429, "throttled"


def export_routes() -> list[Route]:
    return [
        Route("/bulk-export/{export_id}", status, methods=["GET", "DELETE"]),
        Route("/bulk-export/{export_id}/{name}", download, methods=["GET", "HEAD"]),
    ]


# --- Kick-off ---------------------------------------------------------------------------


async def system_operation(request: Request, code: str) -> Response:
    """`[base]/$export` (export.html "Endpoint - All Patients"... system level)."""
    if code != "export":
        raise NotFound(f"No operation ${code} at the system level")
    return await _kick_off(request, SYSTEM, None)


async def type_operation(request: Request, resource_type: str, code: str) -> Response:
    """`[base]/Patient/$export`: every patient's compartment."""
    if code != "export" or resource_type != "Patient":
        raise NotFound(f"No operation ${code} on {resource_type}")
    return await _kick_off(request, PATIENT, None)


async def group_export(
    request: Request, resource_type: str, resource_id: str, code: str = "export"
) -> Response:
    """`[base]/Group/[id]/$export`: the compartments of the Group's members."""
    if resource_type != "Group":
        raise NotFound(f"No operation $export on {resource_type}")
    return await _kick_off(request, GROUP, resource_id)


async def _kick_off(request: Request, level: str, group_id: str | None) -> Response:
    _response_format(request)  # export.html: Accept application/fhir+json (406 else)
    preferences = _prefer(request)
    if "respond-async" not in preferences:
        raise BadRequest("A bulk export needs the header Prefer: respond-async")
    access: Access = request.state.access
    _require_bulk_scopes(request, access)
    params = await _parameters(request)
    lenient = preferences.get("handling") == "lenient"
    asked = parse_export(level, params, lenient=lenient)
    store: Store = request.app.state.store
    clock = _clock(request)
    if group_id is not None:
        group = await crud.read(store, "Group", group_id, access)
        assert group.body is not None
        # The members as of now: the snapshot's transactionTime is taken a moment later.
        asked = compartment_of(asked, member_ids(codec.load_object(group.body), clock()))
    export = replace(asked, request_url=str(request.url)).with_access(access)
    limit: int = request.app.state.settings.export_max_per_client
    if await running_exports(store, access.client_id, clock()) >= limit:
        raise TooManyRequests(
            f"At most {limit} exports may run at once for one client",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS * 30)},
        )
    export_id = uuid4().hex
    config: ExportConfig = request.app.state.exports
    await kick_off(store, export, clock, export_id, config.running_for)
    request.app.state.jobs.wake()
    return Response(status_code=202, headers={"Content-Location": _status_url(request, export_id)})


def _require_bulk_scopes(request: Request, access: Access) -> None:
    if request.app.state.authenticator is None:
        return
    contexts = {permission.context for permission in access.scopes.permissions}
    if not contexts & {Context.SYSTEM, Context.USER}:
        raise Forbidden("A bulk export needs system/ or user/ scopes, not patient/ ones")


async def _parameters(request: Request) -> list[tuple[str, str]]:
    """The kick-off's parameters: the query (GET), or a Parameters body (POST,
    export.html "Bulk Data Kick-off Request" POST)."""
    if request.method == "GET":
        return list(request.query_params.multi_items())
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return [(k, v) for k, v in request.query_params.multi_items() if k.startswith("_format")]
    require_content_type(request, RESOURCE_TYPES)
    body = codec.load_object(raw)
    if body.get("resourceType") != "Parameters":
        raise BadRequest("The body of a bulk export kick-off is a Parameters resource")
    pairs: list[tuple[str, str]] = []
    parameters = body.get("parameter") or []
    if not isinstance(parameters, list):
        raise BadRequest("Parameters.parameter must be a JSON array", expression="parameter")
    for parameter in parameters:
        name = parameter.get("name") if isinstance(parameter, dict) else None
        value = _parameter_value(parameter) if isinstance(parameter, dict) else None
        if not isinstance(name, str) or value is None:
            raise BadRequest("Each parameter needs a name and a value[x] this server reads")
        pairs.append((name, value))
    return pairs


def _parameter_value(parameter: dict[str, Any]) -> str | None:
    for key in ("valueString", "valueCode", "valueInstant", "valueUri", "valueDateTime"):
        if isinstance(parameter.get(key), str):
            return str(parameter[key])
    reference = parameter.get("valueReference")
    if isinstance(reference, dict) and isinstance(reference.get("reference"), str):
        return str(reference["reference"])
    if isinstance(parameter.get("valueBoolean"), bool):
        return "true" if parameter["valueBoolean"] else "false"
    return None


# --- Status, cancel, files ----------------------------------------------------------------


async def status(request: Request) -> Response:
    export_id = request.path_params["export_id"]
    record = await _own_export(request, export_id)
    config: ExportConfig = request.app.state.exports
    store: Store = request.app.state.store
    clock = _clock(request)
    if request.method == "DELETE":
        await cancel_export(store, config, clock, export_id)
        return Response(status_code=202)
    if record["state"] == FAILED:
        raise Unprocessable(f"The export failed: {record.get('error', 'unknown error')}")
    if record["state"] == DONE:
        base = _status_url(request, export_id)
        requires_token = request.app.state.authenticator is not None
        body = manifest(record, lambda name: f"{base}/{name}", requires_token)
        return JSONResponse(body, headers={"Expires": _http_date(record["expires"])})
    now = clock()
    polled = await store.get_record(POLLED, export_id, now)
    if polled is not None:
        last = datetime.fromisoformat(polled["at"])
        wait = last + timedelta(seconds=RETRY_AFTER_SECONDS) - now
        if wait > timedelta(0):
            raise TooManyRequests(
                f"Poll the status at most every {RETRY_AFTER_SECONDS} seconds",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
    await store.put_record(POLLED, export_id, {"at": now.isoformat()}, now + config.retention)
    return Response(
        status_code=202,
        headers={
            "X-Progress": progress_text(record),
            "Retry-After": str(RETRY_AFTER_SECONDS),
        },
    )


async def download(request: Request) -> Response:
    """export.html "Bulk Data Output File Request": NDJSON, gzip on request, ranges."""
    export_id, name = request.path_params["export_id"], request.path_params["name"]
    record = await _own_export(request, export_id)
    names = {f["name"] for f in record.get("files", ())}
    if record["state"] != DONE or not FILE_NAME.fullmatch(name) or name not in names:
        raise NotFound(f"No file {name!r} in this export")
    path = export_file(request.app.state.exports, export_id, name)
    wants_gzip = "gzip" in request.headers.get("accept-encoding", "").lower()
    if wants_gzip and "range" not in request.headers:
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return StreamingResponse(_gzipped(path), media_type=NDJSON, headers=headers)
    return FileResponse(path, media_type=NDJSON, headers={"Vary": "Accept-Encoding"})


async def _gzipped(path: Any) -> AsyncIterator[bytes]:
    """The file gzip-compressed block by block: never the whole file in memory."""
    compressor = zlib.compressobj(wbits=31)
    with open(path, "rb") as handle:  # noqa: ASYNC230 - small blocks from a local file
        while block := handle.read(_GZIP_BLOCK):
            if data := compressor.compress(block):
                yield data
    yield compressor.flush()


async def _own_export(request: Request, export_id: str) -> dict[str, Any]:
    """The export's status record, when the request's token is of the kick-off's
    client and user; 404 otherwise, so that nobody else learns anything."""
    access = await request_access(request)
    store: Store = request.app.state.store
    record = await export_status(store, export_id, _clock(request)())
    if (
        record is None
        or record.get("client_id") != access.client_id
        or record.get("user") != access.user
    ):
        raise NotFound("No such export: it was never started, or was cancelled or expired")
    return record


def _prefer(request: Request) -> dict[str, str]:
    preferences: dict[str, str] = {}
    for part in request.headers.get("prefer", "").replace(";", ",").split(","):
        key, _, value = part.partition("=")
        if key.strip():
            preferences[key.strip().lower()] = value.strip().strip('"').lower()
    return preferences


def _status_url(request: Request, export_id: str) -> str:
    base = base_url(request)
    origin = base.removesuffix(request.app.state.settings.base_path)
    return f"{origin}/bulk-export/{export_id}"


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.writes.clock
    return clock


def _http_date(instant: str) -> str:
    return http_date(datetime.fromisoformat(instant.replace("Z", "+00:00")))
