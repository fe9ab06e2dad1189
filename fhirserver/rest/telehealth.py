"""Telehealth over HTTP: the virtual-visit operations under the FHIR base, and outside it
the public join page (`/join/{code}`) and the providers' webhooks
(`/telehealth/webhooks/{provider}`)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from fhirserver.errors import BadRequest, FHIRError, NotFound
from fhirserver.interactions.operations import definition, input_parameters
from fhirserver.resources import codec
from fhirserver.resources.meta import format_instant
from fhirserver.resources.references import local_reference
from fhirserver.rest.negotiation import (
    FORM,
    RESOURCE_TYPES,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.ratelimit import RateLimit, client_key
from fhirserver.rest.responses import fhir_response
from fhirserver.telehealth.context import VisitContext
from fhirserver.telehealth.join import Joined, join_by_code
from fhirserver.telehealth.records import MAX_DISPLAY, clean_display
from fhirserver.telehealth.visit_operations import (
    StartedVisit,
    end_virtual_visit,
    start_virtual_visit,
)
from fhirserver.telehealth.webhooks import challenge_answer, record_webhook


class TooManyRequests(FHIRError):
    status, code = 429, "throttled"


def _visit_context(request: Request) -> VisitContext:
    context: VisitContext = request.app.state.visit_context
    return context


async def operation(request: Request, resource_type: str, resource_id: str, code: str) -> Response:
    """POST [type]/[id]/$[code] (R4 operations.html#executing): a Parameters body, or
    none when every input is optional."""
    fmt = response_format(request)
    spec = definition(resource_type, code)
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    body = None
    if raw.strip():
        require_content_type(request, RESOURCE_TYPES)
        body = codec.load_object(raw)
    given = input_parameters(spec, body)
    context = _visit_context(request)
    if code == "start-virtual-visit":
        practitioner = _reference(given.get("practitioner"))
        display = given.get("display", [None])[0]
        started = await start_virtual_visit(
            context, resource_id, practitioner, display, request.state.access
        )
        return fhir_response(_started_parameters(started), fmt)
    reason = _text(given.get("reason"))
    encounter = await end_virtual_visit(
        context, resource_type, resource_id, reason, request.state.access
    )
    return fhir_response(encounter, fmt)


def _text(values: list[Any] | None) -> str | None:
    """A CodeableConcept input as text: its text, else its codings' displays or codes."""
    concept = values[0] if values else None
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    return "; ".join(str(c.get("display") or c.get("code")) for c in codings) or None


def _reference(values: list[Any] | None) -> str | None:
    """A Reference input, its target already checked against the definition."""
    return local_reference(values[0]) if values else None


def _started_parameters(started: StartedVisit) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": "encounter", "resource": started.encounter},
        {"name": "hostUrl", "valueUrl": started.host.join_url},
    ]
    if started.host.token is not None:
        parameters.append({"name": "hostToken", "valueString": started.host.token})
    parameters += [
        {"name": "patientUrl", "valueUrl": started.patient_url},
        {"name": "meetingCode", "valueString": started.meeting_code},
    ]
    if started.host.expires_at is not None:
        parameters.append(
            {"name": "expires", "valueInstant": format_instant(started.host.expires_at)}
        )
    return {"resourceType": "Parameters", "parameter": parameters}


# -- join by code ---------------------------------------------------------------------------


def _page() -> str:
    """The page, with the messages of every language it speaks (join_messages/*.json;
    the page picks the patient's, README "Join by code")."""
    folder = resources.files("fhirserver.rest").joinpath("join_messages")
    messages = {
        item.name.removesuffix(".json"): json.loads(item.read_text(encoding="utf-8"))
        for item in folder.iterdir()
        if item.name.endswith(".json")
    }
    # Inside a <script> element: no "</" may close it early.
    inline = json.dumps(messages, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    page = resources.files("fhirserver.rest").joinpath("join.html").read_text(encoding="utf-8")
    return page.replace("{{MESSAGES}}", inline)


async def join_page(request: Request) -> Response:
    """The page a patient opens (the Appointment's address): name, then the waiting room,
    then the call. The code in the path, if any, is only filled into the form."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})


async def join(request: Request) -> Response:
    """POST /join/{code} with {"name": ...} (JSON or a form): 429 past the rate limit, the
    same 404 for every code that does not admit now, else the waiting room or the call.

    Only wrong guesses count, against the client that made them (its address, an IPv6
    /64): a code is never locked, the clients that guessed wrong are. A count kept per
    code, as before, let anyone who knew a code spend it and keep the patient out; the
    48-bit codes, not a per-code count, are what defeat guessing from many addresses.
    A client past the limit is refused even the right code, or the answer would tell
    it which guess was right. A join that admits (waiting or ready, the waiting room
    polling every 5 s) gives its attempt back."""
    typed = request.path_params["code"]
    limit: RateLimit = request.app.state.join_limit
    client = client_key(request)
    wait = limit.take(client)
    if wait:
        raise TooManyRequests(
            "Too many attempts: wait before trying again",
            headers={"Retry-After": RateLimit.retry_after(wait)},
        )
    name = await _display_name(request)
    joined = await join_by_code(_visit_context(request), typed, name)
    limit.give_back(client)
    return JSONResponse(_joined(joined), headers={"Cache-Control": "no-store"})


async def _display_name(request: Request) -> str:
    raw = await read_body(request, 4096)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    name: Any = None
    if content_type == FORM:
        name = dict(parse_qsl(raw.decode("utf-8", "replace"))).get("name")
    elif raw.strip():
        data = codec.loads(raw)
        name = data.get("name") if isinstance(data, dict) else None
    cleaned = clean_display(name) if isinstance(name, str) else None
    if cleaned is None:
        raise BadRequest(
            f"Give the name to show in the visit (1 to {MAX_DISPLAY} characters of text)"
        )
    return cleaned


def _joined(joined: Joined) -> dict[str, Any]:
    if joined.waiting or joined.token is None:
        waiting: dict[str, Any] = {"status": "waiting", "start": joined.start}
        waiting["with"] = list(joined.room.with_whom)
        if joined.room.language is not None:
            waiting["language"] = joined.room.language
        return waiting
    answer: dict[str, Any] = {"status": "ready", "url": joined.token.join_url}
    if joined.token.token is not None:
        answer["token"] = joined.token.token
    if joined.token.expires_at is not None:
        answer["expires"] = format_instant(joined.token.expires_at)
    return answer


# -- webhooks -------------------------------------------------------------------------------


async def webhook(request: Request) -> Response:
    """A provider's event delivery: verified by the provider (401 if not), then recorded;
    or its endpoint challenge, verified and answered."""
    context = _visit_context(request)
    if request.path_params["provider"] != context.provider.name:
        raise NotFound(f"No webhook for {request.path_params['provider']!r} here")
    body = await read_body(request, 256 * 1024)
    answer = challenge_answer(context, request.headers, body)
    if answer is not None:
        return JSONResponse(answer)
    recorded = await record_webhook(context, request.headers, body)
    return JSONResponse({"recorded": recorded})


def telehealth_routes() -> list[Route]:
    return [
        Route("/join", join_page, methods=["GET"]),
        Route("/join/{code}", join_page, methods=["GET"]),
        Route("/join/{code}", join, methods=["POST"]),
        Route("/telehealth/webhooks/{provider}", webhook, methods=["POST"]),
    ]
