"""The URL space under the FHIR base (R4 http.html#general) and which method does what there.

One dispatcher rather than a route per pattern, so that an unknown type is a 404 and a
known path with the wrong method is a 405, each as an OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhirserver.errors import MethodNotAllowed, NotFound
from fhirserver.resources.definitions import is_resource_type
from fhirserver.rest import endpoints

Handler = Callable[..., Awaitable[Response]]
Methods = dict[str, Handler]

_BASE: Methods = {"GET": endpoints.search_system}
_SYSTEM: dict[str, Methods] = {
    "metadata": {"GET": endpoints.capabilities},
    "_history": {"GET": endpoints.history_endpoint},
    "_search": {"POST": endpoints.search_system},
}
_TYPE: Methods = {
    "GET": endpoints.search_type,
    "POST": endpoints.create,
    "PUT": endpoints.conditional_update,
    "DELETE": endpoints.conditional_delete,
}
_TYPE_SEARCH: Methods = {"POST": endpoints.search_type}
_COMPARTMENT: Methods = {"GET": endpoints.search_compartment}
_TYPE_HISTORY: Methods = {"GET": endpoints.history_endpoint}
_INSTANCE: Methods = {
    "GET": endpoints.read,
    "PUT": endpoints.update,
    "PATCH": endpoints.patch,
    "DELETE": endpoints.delete,
}
_INSTANCE_HISTORY: Methods = {"GET": endpoints.history_endpoint}
_VERSION: Methods = {"GET": endpoints.vread}


def _resolve(segments: list[str]) -> tuple[Methods, list[str]]:
    """The methods allowed at a path, and the path arguments their handlers take."""
    if not segments:
        return _BASE, []
    head, rest = segments[0], segments[1:]
    if head in _SYSTEM and not rest:
        return _SYSTEM[head], []
    if not is_resource_type(head):
        raise NotFound(f"Unknown resource type or path {head!r}")
    match rest:
        case []:
            return _TYPE, [head]
        case ["_history"]:
            return _TYPE_HISTORY, [head]
        case ["_search"]:
            return _TYPE_SEARCH, [head]
        case [resource_id]:
            return _INSTANCE, [head, resource_id]
        case [resource_id, "_history"]:
            return _INSTANCE_HISTORY, [head, resource_id]
        case [resource_id, "_history", version_id]:
            return _VERSION, [head, resource_id, version_id]
        case [resource_id, member_type] if is_resource_type(member_type):
            return _COMPARTMENT, [head, resource_id, member_type]
    raise NotFound(f"No FHIR interaction lives at {'/'.join(segments)!r}")


async def dispatch(request: Request) -> Response:
    # From the raw path: the route's pattern would let a trailing newline slip past.
    path = request.scope["path"].removeprefix(request.app.state.settings.base_path)
    methods, arguments = _resolve([s for s in path.split("/") if s])
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


def routes(base_path: str) -> list[Route]:
    return [
        Route(base_path + "/{path:path}", dispatch, methods=_ALL_METHODS),
        Route(base_path or "/", dispatch, methods=_ALL_METHODS),
        Route("/{path:path}", not_found, methods=_ALL_METHODS),
    ]
