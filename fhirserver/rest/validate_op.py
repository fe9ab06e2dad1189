"""`$validate` over HTTP (R4 resource-operation-validate.html): POST [type]/$validate and
POST [type]/[id]/$validate with a resource or a Parameters body; `mode` and `profile`
may also come in the query string (R4 operations.html#executing). The answer is 200
with an OperationOutcome whatever the resource's validity; 400 only when the request
itself cannot be run."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.cpu import CpuPool, work
from fhirserver.interactions.validate_op import validate_operation, validate_request
from fhirserver.profiles.source import ProfileSource
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.rest.errors import operation_outcome
from fhirserver.rest.negotiation import (
    RESOURCE_TYPES,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.responses import fhir_response


async def type_validate(request: Request, resource_type: str, code: str) -> Response:
    return await _validate(request, resource_type, None)


async def instance_validate(
    request: Request, resource_type: str, resource_id: str, code: str
) -> Response:
    return await _validate(request, resource_type, resource_id)


async def _validate(request: Request, resource_type: str, resource_id: str | None) -> Response:
    fmt = response_format(request)
    query = request.query_params
    asked = validate_request(
        resource_type,
        await _body(request),
        query.get("mode"),
        tuple(query.getlist("profile")),
    )
    profiles: ProfileSource = request.app.state.profiles
    issues = await validate_operation(
        request.app.state.store,
        profiles,
        resource_type,
        resource_id,
        asked,
        request.state.access,
        request.app.state.writes.cpu,
    )
    return fhir_response(operation_outcome(issues), fmt, 200)


async def _body(request: Request) -> JSONObject | None:
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return None
    require_content_type(request, RESOURCE_TYPES)
    cpu: CpuPool | None = request.app.state.writes.cpu
    return await work(cpu, codec.load_object, raw, cost=len(raw))
