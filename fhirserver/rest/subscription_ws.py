"""The websocket channel over HTTP: `$get-ws-binding-token` and the socket itself.

`Subscription/[id]/$get-ws-binding-token` and `Subscription/$get-ws-binding-token?id=..`
(Subscriptions Backport IG 1.1.0 OperationDefinition
`backport-subscription-get-ws-binding-token`, GET or POST: it changes no resource) answer
the Parameters the IG defines: `token`, `expiration`, `subscription` (one per
subscription the token binds) and `websocket-url`. Each subscription must be one the
caller may read and have a `websocket` channel. The type-level form needs at least one
`id` (the IG lets a server "fail the request" without one).

The socket is at `[base]/websocket`: a path under the FHIR base named as HAPI FHIR names
its websocket endpoint (`ws://host/websocket`); clients are told it by the operation's
`websocket-url`, so the name is ours to choose. The session itself
(`fhirserver.subscriptions.websocket`) knows nothing of Starlette.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fhirserver.auth.access import Access
from fhirserver.config import Settings
from fhirserver.errors import BadRequest, NotFound, NotSupported
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources import codec
from fhirserver.resources.meta import format_instant
from fhirserver.rest.endpoints import base_url
from fhirserver.rest.negotiation import RESOURCE_TYPES, read_body, require_content_type
from fhirserver.rest.negotiation import response_format as _response_format
from fhirserver.rest.responses import fhir_response
from fhirserver.storage.base import Store
from fhirserver.subscriptions.model import records_key
from fhirserver.subscriptions.websocket import (
    CLOSE_TRY_LATER,
    Disconnected,
    Limits,
    NotificationSource,
    Session,
    SocketCounts,
    is_websocket,
    issue_token,
)

OPERATION = "get-ws-binding-token"
SOCKET_PATH = "/websocket"
# Subscriptions one token may bind.
MAX_IDS = 16
# The largest message the server reads from a websocket client (uvicorn's `ws_max_size`,
# which the CLI sets: it applies before the app sees a frame, so a larger one is never
# buffered; uvicorn's default is 16 MiB). A command is at most `Limits.max_message_chars`
# (1024) characters, 4 bytes each at most in UTF-8; anything larger closes with 1009.
MAX_MESSAGE_BYTES = 4096
_UNAVAILABLE = "websocket notifications are not available on this server"


def websocket_routes(base_path: str) -> list[WebSocketRoute]:
    return [WebSocketRoute(base_path + SOCKET_PATH, subscription_socket)]


def websocket_url(request: Request) -> str:
    """`[base]/websocket` with the base's scheme as ws: or wss: (RFC 6455 section 3)."""
    base = base_url(request)
    scheme, _, rest = base.partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + SOCKET_PATH


async def instance_binding_token(
    request: Request, resource_type: str, resource_id: str, code: str = OPERATION
) -> Response:
    """`Subscription/[id]/$get-ws-binding-token`: a token for that one subscription (the
    IG: "At the Instance level, this parameter [id] is ignored")."""
    _require_subscription(resource_type, code)
    return await _binding_token(request, (resource_id,))


async def type_binding_token(request: Request, resource_type: str, code: str) -> Response:
    """`Subscription/$get-ws-binding-token` with one or more `id` parameters."""
    _require_subscription(resource_type, code)
    ids = tuple(dict.fromkeys(await _ids(request)))
    if not ids:
        raise BadRequest(
            "$get-ws-binding-token on the Subscription type needs at least one id parameter",
            expression="id",
        )
    if len(ids) > MAX_IDS:
        raise BadRequest(f"One binding token binds at most {MAX_IDS} subscriptions")
    return await _binding_token(request, ids)


def _require_subscription(resource_type: str, code: str) -> None:
    if resource_type != "Subscription" or code != OPERATION:
        raise NotFound(f"No operation ${code} on {resource_type}")


async def _binding_token(request: Request, ids: tuple[str, ...]) -> Response:
    fmt = _response_format(request)
    if request.app.state.notification_source is None:
        raise NotSupported(_UNAVAILABLE)
    store: Store = request.app.state.store
    access: Access = request.state.access
    incarnations: list[str] = []
    for subscription_id in ids:
        # Read as the caller: a subscription it may not read is not found (or forbidden).
        version = await crud.read(store, "Subscription", subscription_id, access)
        assert version.body is not None
        subscription = codec.load_object(version.body)
        if not is_websocket(subscription):
            raise BadRequest(
                f"Subscription/{subscription_id} does not have a websocket channel",
                expression="Subscription.channel.type",
            )
        # The token binds this incarnation only, not one re-created under the id.
        incarnations.append(records_key(subscription))
    settings: Settings = request.app.state.settings
    writes: WriteContext = request.app.state.writes
    lifetime = timedelta(seconds=settings.ws_binding_token_seconds)
    token, binding = await issue_token(store, tuple(incarnations), access, writes.clock(), lifetime)
    parameters: list[dict[str, Any]] = [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": format_instant(binding.expires)},
        *({"name": "subscription", "valueString": f"Subscription/{i}"} for i in ids),
        {"name": "websocket-url", "valueUrl": websocket_url(request)},
    ]
    # A bearer secret: no cache keeps it (RFC 6749 section 5.1 asks the same of tokens).
    return fhir_response(
        {"resourceType": "Parameters", "parameter": parameters},
        fmt,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


async def _ids(request: Request) -> list[str]:
    """The `id` parameters: from the query (GET), or a Parameters body (POST)."""
    if request.method == "GET":
        return request.query_params.getlist("id")
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return request.query_params.getlist("id")
    require_content_type(request, RESOURCE_TYPES)
    body = codec.load_object(raw)
    parameters = body.get("parameter") or []
    if body.get("resourceType") != "Parameters" or not isinstance(parameters, list):
        raise BadRequest("The body of $get-ws-binding-token is a Parameters resource")
    ids: list[str] = []
    for parameter in parameters:
        if not isinstance(parameter, dict) or parameter.get("name") != "id":
            continue
        value = parameter.get("valueId", parameter.get("valueString"))
        if not isinstance(value, str):
            raise BadRequest("Each id parameter needs a valueId", expression="Parameters.parameter")
        ids.append(value)
    return ids


# --- The socket ---------------------------------------------------------------------------


class _StarletteConnection:
    """Starlette's WebSocket as the session's `Connection`."""

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def receive_text(self) -> str | None:
        message = await self._websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if isinstance(text, str):
            return text
        data = message.get("bytes") or b""
        # A binary frame is no command; decoded, it is answered as an unknown one.
        return bytes(data).decode("utf-8", errors="replace")

    async def send_text(self, text: str) -> None:
        try:
            await self._websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as gone:
            raise Disconnected() from gone

    async def close(self, code: int, reason: str) -> None:
        if self._websocket.application_state == WebSocketState.CONNECTED:
            await self._websocket.close(code, reason)


async def subscription_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    state = websocket.app.state
    source: NotificationSource | None = state.notification_source
    connection = _StarletteConnection(websocket)
    if source is None:
        try:
            await connection.send_text(f"error {_UNAVAILABLE}")
            await connection.close(CLOSE_TRY_LATER, _UNAVAILABLE)
        except Disconnected:
            pass
        return
    writes: WriteContext = state.writes
    limits: Limits = state.ws_limits
    counts: SocketCounts = state.ws_sockets
    session = Session(
        connection=connection,
        source=source,
        store=state.store,
        clock=writes.clock,
        counts=counts,
        authorization=state.authenticator is not None,
        limits=limits,
    )
    await session.run()
