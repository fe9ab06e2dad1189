"""The URL space under the FHIR base (R4 http.html#general) and which method does what there.

One dispatcher rather than a route per pattern, so that an unknown type is a 404 and a
known path with the wrong method is a 405, each as an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from fhirserver.errors import Forbidden, MethodNotAllowed, NotFound
from fhirserver.interactions.paths import Kind, Target, parse_path
from fhirserver.resources.definitions import resource_types
from fhirserver.rest import (
    endpoints,
    everything,
    export,
    lastn,
    smart,
    smart_authorize,
    subscription_ws,
    subscriptions,
    telehealth,
    validate_op,
)
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
        "PATCH": endpoints.conditional_patch,
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
    # Telehealth's affect state: POST only (R4 operations.html#executing).
    "instance-operation": {"POST": telehealth.operation},
}

# Operations by (type, or None at the system level; code), each at the levels it is
# defined at. Both GET and POST where they change nothing (R4 operations.html#executing:
# `$everything`, patient-operations.html) or where the IG says so (Bulk Data 2.0
# export.html: the kick-off is GET or POST). Any other instance operation is
# telehealth's, POST only.
_OPERATIONS: dict[tuple[str | None, str], dict[str, Methods]] = {
    ("Patient", "everything"): {
        "instance-operation": {
            "GET": everything.patient_everything,
            "POST": everything.patient_everything,
        },
        "type-operation": {
            "GET": everything.all_patients_everything,
            "POST": everything.all_patients_everything,
        },
    },
    (None, "export"): {
        "system-operation": {"GET": export.system_operation, "POST": export.system_operation},
    },
    ("Patient", "export"): {
        "type-operation": {"GET": export.type_operation, "POST": export.type_operation},
    },
    ("Group", "export"): {
        "instance-operation": {"GET": export.group_export, "POST": export.group_export},
    },
    # R4 observation-operation-lastn.html: changes nothing, so GET or POST.
    ("Observation", "lastn"): {
        "type-operation": {"GET": lastn.observation_lastn, "POST": lastn.observation_lastn},
    },
    # Subscriptions Backport IG 1.1.0: a token to bind a websocket with.
    ("Subscription", "get-ws-binding-token"): {
        "instance-operation": {
            "GET": subscription_ws.instance_binding_token,
            "POST": subscription_ws.instance_binding_token,
        },
        "type-operation": {
            "GET": subscription_ws.type_binding_token,
            "POST": subscription_ws.type_binding_token,
        },
    },
    # R4 resource-operation-validate.html: on every type, at the type and instance
    # levels; POST only (it takes a resource).
    **{
        (resource_type, "validate"): {
            "type-operation": {"POST": validate_op.type_validate},
            "instance-operation": {"POST": validate_op.instance_validate},
        }
        for resource_type in resource_types()
    },
    # Subscriptions R5 Backport IG 1.1.0.
    ("Subscription", "status"): {
        "instance-operation": {"GET": subscriptions.status, "POST": subscriptions.status},
        "type-operation": {"GET": subscriptions.type_status, "POST": subscriptions.type_status},
    },
    ("Subscription", "events"): {
        "instance-operation": {"GET": subscriptions.events, "POST": subscriptions.events},
    },
}


def _methods(target: Target) -> Methods:
    """What answers at `target`: a defined operation's handlers, else the
    interaction's (a system- or type-level operation not defined is unknown)."""
    if target.operation is not None:
        defined = _OPERATIONS.get((target.resource_type, target.operation), {})
        if target.kind in defined:
            return defined[target.kind]
        if target.kind in ("type-operation", "system-operation"):
            where = f"the {target.resource_type} type" if target.resource_type else "the system"
            raise NotFound(f"No operation ${target.operation} is defined on {where}")
    return _METHODS[target.kind]


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
    methods, arguments = _methods(target), _arguments(target)
    # The CapabilityStatement stays public (SMART 2.2 conformance.html); everything
    # else runs under the request's token.
    request.state.access = (
        EVERYTHING if target.kind == "metadata" else await request_access(request)
    )
    try:
        # HEAD is a GET without its body, for reads; an operation's GET may start
        # work (a bulk export's kick-off), so HEAD is not offered there.
        read_like = not target.kind.endswith("operation")
        return await _handle(request, methods, arguments, read_like)
    except Forbidden as refused:
        await audit_refusal(request, target, refused)
        raise


async def _handle(request: Request, methods: Methods, arguments: list[str], head: bool) -> Response:
    if head and request.method == "HEAD" and "GET" in methods:
        answer = await methods["GET"](request, *arguments)
        return Response(status_code=answer.status_code, headers=answer.headers)
    handler = methods.get(request.method)
    if handler is None:
        allowed = [*methods, "HEAD"] if head and "GET" in methods else list(methods)
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


def routes(base_path: str, auth_mode: str = "off") -> list[BaseRoute]:
    return [
        # First: with FHIR at the root ("" base path) they would fall to the dispatcher.
        *telehealth.telehealth_routes(),
        # Bulk export's status URLs and files, outside the FHIR base.
        *export.export_routes(),
        # The built-in authorization server's browser flow and EHR launch (SMART).
        *(smart_authorize.authorize_routes() if auth_mode == "smart" else []),
        *smart.smart_routes(base_path, auth_mode),
        # The websocket channel's socket (a websocket scope: no HTTP route matches it).
        *subscription_ws.websocket_routes(base_path),
        Route(base_path + "/{path:path}", dispatch, methods=_ALL_METHODS),
        Route(base_path or "/", dispatch, methods=_ALL_METHODS),
        Route("/{path:path}", not_found, methods=_ALL_METHODS),
    ]
