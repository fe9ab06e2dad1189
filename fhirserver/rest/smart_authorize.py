"""The SMART authorization endpoint over HTTP (App Launch 2.2 app-launch.html, RFC 6749
section 4.1, RFC 7636) and the EHR launch endpoint (`POST /auth/launch`).

`GET|POST /auth/authorize` checks the request (`auth.authorize.validate_request`) and
shows the login page; the pages post to the steps below it (login, patient, approve),
each checking the session's CSRF token first. The last step redirects to the client
with `code` and `state`. Only in `smart` mode (`routes.routes`).

Every page is sent with `Cache-Control: no-store` (RFC 6749 section 5.1's rule for
anything carrying secrets), `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'`
(no framing: clickjacking), CSP `default-src 'none'` (no script, images or fetches:
injected markup has nothing to work with), `form-action` limited to this server and
the client's redirect origin (the approval's answer is a redirect there), and
`Referrer-Policy: no-referrer` (nothing of a page leaks to the client in a Referer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from fhirserver.auth.access import Access
from fhirserver.auth.authenticate import Authenticator
from fhirserver.auth.authorize import (
    AuthorizeError,
    PatientContext,
    UntrustedRedirect,
    approved_scopes,
    denied,
    find_patient,
    find_patients,
    issue_code,
    patient_context,
    redirect_origin,
    validate_request,
)
from fhirserver.auth.errors import InvalidToken
from fhirserver.auth.launch import create_launch
from fhirserver.auth.login import FAILED_LOGIN, failed_login_event, log_in
from fhirserver.auth.registry import get_user
from fhirserver.auth.scopes import parse_scopes
from fhirserver.auth.server import AuthServer
from fhirserver.auth.sessions import (
    SESSION_LIFETIME,
    BrowserSession,
    Flow,
    csrf_matches,
    find_flow,
    find_session,
    finish_flow,
    new_session,
    replace_session,
    save_flow,
    start_flow,
)
from fhirserver.clock import Clock
from fhirserver.errors import BadRequest
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources import codec
from fhirserver.rest.negotiation import FORM, read_body
from fhirserver.rest.ratelimit import RateLimit, client_key
from fhirserver.rest.smart_pages import (
    approval_page,
    error_page,
    login_page,
    patient_page,
)
from fhirserver.storage.base import Store
from fhirserver.storage.retry import run_unit

AUTHORIZE = "/auth/authorize"
LOGIN = AUTHORIZE + "/login"
PATIENT = AUTHORIZE + "/patient"
APPROVE = AUTHORIZE + "/approve"
LAUNCH = "/auth/launch"
COOKIE = "fhirserver_auth_session"
# Room for every authorization parameter, a long scope list included.
MAX_FORM_BYTES = 16 * 1024
# The picker lists this many patients at most; more asks for a narrower search.
PICKER_LIMIT = 25
# Failed logins per minute (burst the same) per client address, and per client address
# and username (burst twice that).
LOGINS_PER_ADDRESS = 20
LOGINS_PER_USERNAME = 5
_START_AGAIN = (
    "This sign-in has expired or is not valid. Go back to the application and start again."
)


def login_limits() -> tuple[RateLimit, RateLimit]:
    """The login rate limits (per client address, per address and username) for
    `app.state`."""
    return (
        RateLimit(LOGINS_PER_ADDRESS, burst=LOGINS_PER_ADDRESS),
        RateLimit(LOGINS_PER_USERNAME, burst=LOGINS_PER_USERNAME * 2),
    )


def authorize_routes() -> list[Route]:
    return [
        Route(AUTHORIZE, authorize, methods=["GET", "POST"]),
        Route(LOGIN, login, methods=["POST"]),
        Route(PATIENT, choose_patient, methods=["POST"]),
        Route(APPROVE, approve, methods=["POST"]),
        Route(LAUNCH, launch, methods=["POST"]),
    ]


# -- the steps ------------------------------------------------------------------------------


async def authorize(request: Request) -> Response:
    """The authorization request, by GET or by a form POST (SMART 2.2: both)."""
    store, now = _store(request), _clock(request)()
    pairs = request.query_params.multi_items()
    if request.method == "POST":
        pairs = await _form_pairs(request)
    try:
        # The FHIR base URL tokens name (auth/urls.py), not the request's Host.
        fhir_base = _auth_server(request).urls.fhir_base
        pending = await validate_request(store, pairs, fhir_base, now)
    except UntrustedRedirect as error:
        return _page(request, error_page("This application cannot continue", error.reason), 400)
    except AuthorizeError as error:
        return _redirect(request, error.location)
    session = await find_session(store, request.cookies.get(COOKIE), now)
    session = session or await new_session(store, now)
    flow = await start_flow(store, session, pending, now)
    html = login_page(LOGIN, flow.flow_id, session.csrf, pending.client_id)
    return _page(request, html, 200, session, flow)


async def login(request: Request) -> Response:
    """The login form: rate-limited, one answer for every kind of failure."""
    step = await _step(request)
    if isinstance(step, Response):
        return step
    form, session, flow = step
    username, password = _one(form, "username"), _one(form, "password")
    # Failures count against the address that made them, per username and in all: a
    # count per username alone let anyone lock a user out by failing as them. A right
    # password from an address that has not been failing is never refused; one past
    # its limit is (else the answer would tell which guess was right). Each attempt is
    # taken first and a success given back, so attempts at once cannot all pass.
    limits: tuple[RateLimit, RateLimit] = request.app.state.login_limits
    address = client_key(request)
    keys = (address, f"{address} {username.strip().casefold()[:255]}")
    for limit, key in zip(limits, keys, strict=True):
        wait = limit.take(key)
        if wait:
            html = error_page("Too many attempts", "Wait a minute before signing in again.")
            response = _page(request, html, 429, session, flow)
            response.headers["Retry-After"] = RateLimit.retry_after(wait)
            return response
    store, now = _store(request), _clock(request)()
    user = await log_in(store, username, password, now)
    if user is None:
        await _audit_failed_login(request, username, flow.pending.client_id, now)
        html = login_page(LOGIN, flow.flow_id, session.csrf, flow.pending.client_id, FAILED_LOGIN)
        return _page(request, html, 200, session, flow)
    for limit, key in zip(limits, keys, strict=True):
        limit.give_back(key)
    try:
        context = await patient_context(store, flow.pending, user.fhir_user)
    except AuthorizeError as error:
        await finish_flow(store, flow.flow_id, session, now)
        return _redirect(request, error.location)
    flow = Flow(
        flow.flow_id, flow.session_key, flow.pending, user.username, user.fhir_user, context
    )
    session, flow = await replace_session(store, session, flow, now)
    if context.pick:
        return await _picker(request, session, flow, "")
    return await _approval(request, session, flow)


async def choose_patient(request: Request) -> Response:
    """The picker: a name search, or the patient chosen."""
    step = await _step(request)
    if isinstance(step, Response):
        return step
    form, session, flow = step
    if flow.username is None or not flow.context.pick:
        return _page(request, error_page("Cannot continue", _START_AGAIN), 400, session)
    store, now = _store(request), _clock(request)()
    if all(name != "patient" for name, _ in form):
        return await _picker(request, session, flow, _one(form, "name"))
    chosen = await find_patient(store, _one(form, "patient"))
    if chosen is None:
        return await _picker(request, session, flow, "", status=400)
    flow = Flow(
        flow.flow_id,
        flow.session_key,
        flow.pending,
        flow.username,
        flow.fhir_user,
        PatientContext(chosen.patient_id, None, pick=True),
    )
    await save_flow(store, flow, now)
    return await _approval(request, session, flow)


async def approve(request: Request) -> Response:
    """Allow (with the scopes left ticked) or deny; either way back to the client."""
    step = await _step(request)
    if isinstance(step, Response):
        return step
    form, session, flow = step
    store, now = _store(request), _clock(request)()
    decision = _one(form, "decision")
    ready = flow.username is not None and not (flow.context.pick and not flow.context.patient)
    if not ready or decision not in ("approve", "deny"):
        return _page(request, error_page("Cannot continue", _START_AGAIN), 400, session)
    # Taken, not read: a second submission finds nothing and issues no second code.
    taken = await finish_flow(store, flow.flow_id, session, now)
    user = await get_user(store, flow.username or "", now) if taken is not None else None
    if taken is None or user is None:
        return _page(request, error_page("Cannot continue", _START_AGAIN), 400, session)
    try:
        if decision == "deny":
            raise denied(flow.pending)
        kept = [value for name, value in form if name == "scope"]
        scopes = approved_scopes(parse_scopes(flow.pending.scopes), kept)
        lifetime = _auth_server(request).code_lifetime
        location = await issue_code(store, flow.pending, user, flow.context, scopes, now, lifetime)
    except AuthorizeError as error:
        location = error.location
    return _redirect(request, location)


async def _picker(
    request: Request, session: BrowserSession, flow: Flow, name: str, status: int = 200
) -> Response:
    patients, more = await find_patients(_store(request), name, PICKER_LIMIT)
    html = patient_page(PATIENT, flow.flow_id, session.csrf, name, patients, more)
    return _page(request, html, status, session, flow)


async def _approval(request: Request, session: BrowserSession, flow: Flow) -> Response:
    patient_id = flow.context.patient
    patient = await find_patient(_store(request), patient_id) if patient_id else None
    html = approval_page(
        APPROVE,
        flow.flow_id,
        session.csrf,
        flow.pending.client_id,
        parse_scopes(flow.pending.scopes),
        flow.username or "",
        patient,
    )
    return _page(request, html, 200, session, flow)


# -- what every step checks -----------------------------------------------------------------

Form = list[tuple[str, str]]


async def _step(request: Request) -> tuple[Form, BrowserSession, Flow] | Response:
    """The form, the browser session (its CSRF token checked) and the flow it is on;
    or the page refusing the request (403 for a missing or wrong CSRF token)."""
    store, now = _store(request), _clock(request)()
    form = await _form_pairs(request)
    session = await find_session(store, request.cookies.get(COOKIE), now)
    if not csrf_matches(session, _one(form, "csrf_token")) or session is None:
        html = error_page("Request refused", "This form did not come from this sign-in page.")
        return _page(request, html, 403)
    flow = await find_flow(store, _one(form, "flow"), session, now)
    if flow is None:
        return _page(request, error_page("Cannot continue", _START_AGAIN), 400, session)
    return form, session, flow


async def _form_pairs(request: Request) -> Form:
    """An `application/x-www-form-urlencoded` body as (name, value) pairs; anything else
    as no fields at all (so a step refuses it for its missing CSRF token)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, MAX_FORM_BYTES)
    if content_type != FORM:
        return []
    return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


def _one(form: Sequence[tuple[str, str]], name: str) -> str:
    """The first value of a field, "" if absent."""
    return next((value for key, value in form if key == name), "")


def _page(
    request: Request,
    html: str,
    status: int,
    session: BrowserSession | None = None,
    flow: Flow | None = None,
) -> Response:
    response = HTMLResponse(html, status_code=status)
    origin = redirect_origin(flow.pending.redirect_uri) if flow is not None else None
    _secure_headers(response, origin)
    if session is not None:
        response.set_cookie(
            COOKIE,
            session.session_id,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/auth",
            secure=_https(request),
            httponly=True,
            samesite="lax",
        )
    return response


def _redirect(request: Request, location: str) -> Response:
    # 303 after a form POST: the browser follows with GET (RFC 9110 section 15.4.4).
    status = 302 if request.method == "GET" else 303
    response = RedirectResponse(location, status_code=status)
    _secure_headers(response, None)
    return response


def _secure_headers(response: Response, form_origin: str | None) -> None:
    form_action = "'self'" + (f" {form_origin}" if form_origin else "")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; "
        "frame-ancestors 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"


def _https(request: Request) -> bool:
    public_url: str = request.app.state.settings.public_url
    return request.url.scheme == "https" or public_url.startswith("https://")


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _auth_server(request: Request) -> AuthServer:
    server: AuthServer = request.app.state.auth_server
    return server


def _writes(request: Request) -> WriteContext:
    writes: WriteContext = request.app.state.writes
    return writes


def _clock(request: Request) -> Clock:
    return _writes(request).clock


async def _audit_failed_login(
    request: Request, username: str, client_id: str, now: datetime
) -> None:
    address = request.client.host if request.client else None
    issuer = _auth_server(request).urls.issuer
    event = failed_login_event(
        at=now, issuer=issuer, username=username, client_id=client_id, address=address
    )
    writes = _writes(request)
    await run_unit(_store(request), lambda unit: crud.write_new(unit, writes, event))


# -- EHR launch -----------------------------------------------------------------------------


async def launch(request: Request) -> Response:
    """POST /auth/launch with `patient` (and optionally `encounter`), as a form or JSON,
    and a bearer token of a practitioner or a system client: `{"launch": ...}`."""
    access = await _authenticated(request)
    body = await read_body(request, MAX_FORM_BYTES)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    if content_type == FORM:
        fields = dict(parse_qsl(body.decode("utf-8", "replace")))
    elif content_type in ("application/json", "application/fhir+json"):
        loaded = codec.loads(body)
        fields = loaded if isinstance(loaded, dict) else {}
    patient, encounter = fields.get("patient"), fields.get("encounter")
    if not isinstance(patient, str) or not patient:
        raise BadRequest("Give the patient to launch for (patient)")
    if encounter is not None and not isinstance(encounter, str):
        raise BadRequest("encounter is an Encounter id")
    lifetime = _auth_server(request).launch_lifetime
    value = await create_launch(
        _store(request), access, patient, encounter or None, _clock(request)(), lifetime
    )
    return JSONResponse(
        {"launch": value}, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def _authenticated(request: Request) -> Access:
    """The `Access` of the request's bearer token (RFC 6750 section 2.1), or 401."""
    authenticator: Authenticator | None = getattr(request.app.state, "authenticator", None)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if authenticator is None or scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("no bearer token")
    return await authenticator(token.strip())
