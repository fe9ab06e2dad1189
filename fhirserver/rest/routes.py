"""The URL space under the FHIR base (R4 http.html#general) and which method does what there.

One dispatcher rather than a route per pattern, so that an unknown type is a 404 and a
known path with the wrong method is a 405, each as an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirserver.errors import Forbidden, MethodNotAllowed, NotFound
from fhirserver.interactions.paths import Kind, Target, parse_path
from fhirserver.rest import endpoints, export, smart, smart_authorize, telehealth
from fhirserver.rest.authorization import EVERYTHING, audit_refusal, request_access

Handler = Callable[..., Awaitable[Response]]
Methods = dict[str, Handler]

_METHODS: dict[Kind, Methods] = {
    "system": {"GET": endpoints.search_system, "POST": endpoints.bundle},
    "metadata": {"GET": endpoints.capabilities},
    "system-history": {"GET": endpoints.history_endpoint},
    "system-search": {"POST": endpoints.search_system},
    "type": {
        "GET": endpoints.search_type,
        "POST": endpoints.create,
        "PUT": endpoints.conditional_update,
        "DELETE": endpoints.conditional_delete,
    },
    "type-history": {"GET": endpoints.history_endpoint},
    "type-search": {"POST": endpoints.search_type},
    "instance": {
        "GET": endpoints.read,
        "PUT": endpoints.update,
        "PATCH": endpoints.patch,
        "DELETE": endpoints.delete,
    },
    "instance-history": {"GET": endpoints.history_endpoint},
    "version": {"GET": endpoints.vread},
    "compartment": {"GET": endpoints.search_compartment},
    # Ours all affect state: POST only (R4 operations.html#executing); but a bulk
    # export's kick-off is GET or POST (Bulk Data IG export.html).
    "instance-operation": {
        "GET": lambda request, *args: _instance_operation(request, "GET", *args),
        "POST": lambda request, *args: _instance_operation(request, "POST", *args),
    },
    "system-operation": {"GET": export.system_operation, "POST": export.system_operation},
    "type-operation": {"GET": export.type_operation, "POST": export.type_operation},
}


async def _instance_operation(
    request: Request, method: str, resource_type: str, resource_id: str, code: str
) -> Response:
    if code == "export":
        return await export.group_export(request, resource_type, resource_id)
    if method != "POST":
        raise MethodNotAllowed(
            f"{method} is not supported here; allowed: POST", headers={"Allow": "POST"}
        )
    return await telehealth.operation(request, resource_type, resource_id, code)


def _arguments(target: Target) -> list[str]:
    """The path arguments a handler takes, in order."""
    values = (
        target.resource_type,
        target.id,
        target.version,
        target.member_type,
        target.operation,
    )
    return [value for value in values if value is not None]


async def dispatch(request: Request) -> Response:
    # From the raw path: the route's pattern would let a trailing newline slip past.
    path = request.scope["path"].removeprefix(request.app.state.settings.base_path)
    target = parse_path(path)
    methods, arguments = _METHODS[target.kind], _arguments(target)
    # The CapabilityStatement stays public (SMART 2.2 conformance.html); everything
    # else runs under the request's token.
    request.state.access = (
        EVERYTHING if target.kind == "metadata" else await request_access(request)
    )
    try:
        return await _handle(request, methods, arguments)
    except Forbidden as refused:
        await audit_refusal(request, target, refused)
        raise


async def _handle(request: Request, methods: Methods, arguments: list[str]) -> Response:
    if request.method == "HEAD" and "GET" in methods:
        answer = await methods["GET"](request, *arguments)
        return Response(status_code=answer.status_code, headers=answer.headers)
    handler = methods.get(request.method)
    if handler is None:
        allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
        raise MethodNotAllowed(
            f"{request.method} is not supported here"
            + (f"; allowed: {', '.join(allowed)}" if allowed else ""),
            headers={"Allow": ", ".join(allowed)},
        )
    return await handler(request, *arguments)


async def not_found(request: Request) -> Response:
    raise NotFound(f"Nothing here: {request.url.path!r} is outside the FHIR base")


# Every method reaches the dispatcher, which answers 405 itself.
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def routes(base_path: str, auth_mode: str = "off") -> list[Route]:
    return [
        # First: with FHIR at the root ("" base path) they would fall to the dispatcher.
        *telehealth.telehealth_routes(),
        # Bulk export's status URLs and files, outside the FHIR base.
        *export.export_routes(),
        # The built-in authorization server's browser flow and EHR launch (SMART).
        *(smart_authorize.authorize_routes() if auth_mode == "smart" else []),
        *smart.smart_routes(base_path, auth_mode),
        Route(base_path + "/{path:path}", dispatch, methods=_ALL_METHODS),
        Route(base_path or "/", dispatch, methods=_ALL_METHODS),
        Route("/{path:path}", not_found, methods=_ALL_METHODS),
    ]
