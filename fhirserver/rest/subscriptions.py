"""`Subscription/[id]/$status` and `Subscription/[id]/$events` over HTTP (Backport IG
1.1.0 operations; GET with the inputs in the query string, or POST with a Parameters
body: R4 operations.html#executing)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.errors import BadRequest
from fhirserver.resources import codec
from fhirserver.rest.endpoints import read_options
from fhirserver.rest.negotiation import (
    RESOURCE_TYPES,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.responses import fhir_response
from fhirserver.subscriptions.context import SubscriptionContext
from fhirserver.subscriptions.operations import (
    subscription_events,
    subscription_status,
    subscriptions_status,
)

_INPUTS = ("eventsSinceNumber", "eventsUntilNumber", "content")


def _context(request: Request) -> SubscriptionContext:
    context: SubscriptionContext = request.app.state.subscriptions
    return context


async def _inputs(request: Request) -> dict[str, str]:
    given = {k: v for k, v in request.query_params.items() if k in _INPUTS}
    if request.method == "POST":
        given.update(await _posted(request, _INPUTS))
    return given


async def _posted(request: Request, names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The named inputs of a POSTed Parameters body (none for an empty body)."""
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return []
    require_content_type(request, RESOURCE_TYPES)
    body = codec.load_object(raw)
    parameters = body.get("parameter") or []
    if body.get("resourceType") != "Parameters" or not isinstance(parameters, list):
        raise BadRequest("the body must be a Parameters resource", expression="parameter")
    given: list[tuple[str, str]] = []
    for parameter in parameters:
        if not isinstance(parameter, dict):
            raise BadRequest("each parameter must be an object", expression="parameter")
        if parameter.get("name") in names:
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
            if value is not None:
                given.append((str(parameter["name"]), str(value)))
    return given


async def status(request: Request, resource_type: str, resource_id: str, code: str) -> Response:
    """GET|POST Subscription/[id]/$status."""
    access = read_options(request).access
    body = await subscription_status(_context(request), resource_id, access)
    return fhir_response(body, response_format(request))


async def type_status(request: Request, resource_type: str, code: str) -> Response:
    """GET|POST Subscription/$status?id=...&status=... (ids and statuses OR'ed)."""
    given = list(request.query_params.multi_items())
    if request.method == "POST":
        given += await _posted(request, ("id", "status"))
    ids = [v for k, value in given if k == "id" for v in value.split(",") if v]
    statuses = [v for k, value in given if k == "status" for v in value.split(",") if v]
    body = await subscriptions_status(_context(request), ids, statuses, read_options(request))
    return fhir_response(body, response_format(request))


async def events(request: Request, resource_type: str, resource_id: str, code: str) -> Response:
    """GET|POST Subscription/[id]/$events."""
    access = read_options(request).access
    given = await _inputs(request)
    body = await subscription_events(
        _context(request),
        resource_id,
        access,
        since=given.get("eventsSinceNumber"),
        until=given.get("eventsUntilNumber"),
        content=given.get("content"),
    )
    return fhir_response(body, response_format(request))
