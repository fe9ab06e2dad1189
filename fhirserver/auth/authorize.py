"""The authorization endpoint's decisions, without HTTP (SMART App Launch 2.2
app-launch.html "Obtain authorization code", RFC 6749 section 4.1, RFC 7636).

A request is checked in two stages, because RFC 6749 section 4.1.2.1 draws a line
between them: while the client or its redirect URI is in doubt the server "SHOULD
inform the resource owner of the error and MUST NOT automatically redirect"
(`UntrustedRedirect`, an error page); once both hold, every other error goes back to
the client's redirect URI as `error=...&state=...` (`AuthorizeError`).

What a request may be granted is the requested scopes within what the client is
registered for (`scopes.narrow`), less `system/` scopes: those belong to backend
services (backend-services.html), never to a person's browser. The user may narrow
that further on the approval screen (`approved_scopes`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from fhirserver.auth.registry import (
    AuthorizationGrant,
    Client,
    User,
    get_client,
    get_launch,
    save_code,
)
from fhirserver.auth.scopes import Context, Scopes, narrow, parse_scopes
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import local_reference
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Reader, Store, Version

# RFC 7636 section 4.2: S256's challenge is BASE64URL(SHA256(verifier)) unpadded, 43 chars.
_S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
# R4 datatypes.html#id.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Echoed values (state, nonce) are the client's; bounded so a page or URL stays small.
MAX_ECHOED_CHARS = 1024
PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "nonce",
)
# fhirUser types who may choose any patient (a picker); SMART leaves who may see whom
# to the server: here, practitioners may, and the granted scopes limit what they see.
PICKING_USERS = frozenset({"Practitioner", "PractitionerRole"})


class UntrustedRedirect(Exception):
    """The client or its redirect URI does not hold: show an error page, never redirect
    (RFC 6749 section 4.1.2.1). `reason` is a fixed phrase, safe to show."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AuthorizeError(Exception):
    """An error for the client, sent to its (validated) redirect URI with the request's
    `state` (RFC 6749 section 4.1.2.1). `description` is a fixed phrase."""

    def __init__(self, error: str, description: str, redirect_uri: str, state: str | None) -> None:
        self.error = error
        self.description = description
        self.redirect_uri = redirect_uri
        self.state = state
        super().__init__(f"{error}: {description}")

    @property
    def location(self) -> str:
        return redirect_to(
            self.redirect_uri,
            {"error": self.error, "error_description": self.description, "state": self.state},
        )


@dataclass(frozen=True)
class PendingAuthorization:
    """A checked authorization request, waiting for the user: `scopes` is what may be
    granted (what the approval screen offers), the launch context comes from an EHR
    launch."""

    client_id: str
    redirect_uri: str
    state: str | None
    scopes: str
    code_challenge: str
    nonce: str | None = None
    launch_patient: str | None = None
    launch_encounter: str | None = None

    def to_record(self) -> dict[str, Any]:
        body: dict[str, Any] = asdict(self)
        return body

    @classmethod
    def from_record(cls, body: Mapping[str, Any]) -> PendingAuthorization:
        return cls(**{name: body[name] for name in cls.__dataclass_fields__ if name in body})


@dataclass(frozen=True)
class PatientContext:
    """Whose record the grant is about, once the user is known: a fixed patient (and
    encounter), or `pick` when a practitioner must choose one first."""

    patient: str | None = None
    encounter: str | None = None
    pick: bool = False


def single_parameters(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], set[str]]:
    """The request's parameters, and the names given more than once (RFC 6749 section
    3.1: "Request and response parameters MUST NOT be included more than once")."""
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for name, value in pairs:
        if name in values:
            repeated.add(name)
        values[name] = value
    return values, repeated


async def check_client(store: Store, params: Mapping[str, str], now: datetime) -> Client:
    """The registered client and an exactly registered redirect URI, or
    `UntrustedRedirect` (RFC 6749 section 3.1.2.3: compare the whole URI; SMART 2.2
    requires `redirect_uri` on every request)."""
    client_id = params.get("client_id", "")
    client = await get_client(store, client_id, now) if client_id else None
    if client is None:
        raise UntrustedRedirect("This application is not registered here.")
    if params.get("redirect_uri", "") not in client.redirect_uris:
        raise UntrustedRedirect(
            "The application asked to return to an address it has not registered."
        )
    return client


async def validate_request(
    store: Store, pairs: Iterable[tuple[str, str]], fhir_base: str, now: datetime
) -> PendingAuthorization:
    """Check an authorization request (SMART app-launch.html "Request Parameters")."""
    params, repeated = single_parameters(pairs)
    if repeated & {"client_id", "redirect_uri"}:
        raise UntrustedRedirect("The request names its application more than once.")
    client = await check_client(store, params, now)
    redirect_uri = params["redirect_uri"]
    state = params.get("state")
    if state is not None and len(state) > MAX_ECHOED_CHARS:
        # Not echoed back: the error goes without it.
        raise AuthorizeError("invalid_request", "state is too long", redirect_uri, None)

    def refuse(error: str, description: str) -> AuthorizeError:
        return AuthorizeError(error, description, redirect_uri, state)

    if repeated:
        raise refuse("invalid_request", "a parameter was given more than once")
    if params.get("response_type") != "code":
        raise refuse("unsupported_response_type", "only response_type=code is supported")
    # SMART 2.2: PKCE is required and "servers SHALL NOT support the plain method".
    if params.get("code_challenge_method") != "S256":
        raise refuse("invalid_request", "PKCE with code_challenge_method=S256 is required")
    challenge = params.get("code_challenge", "")
    if not _S256_CHALLENGE.fullmatch(challenge):
        raise refuse("invalid_request", "code_challenge must be an S256 challenge")
    # SMART 2.2 "aud": the FHIR base URL the app means to reach; a mismatch may be a
    # counterfeit resource server, so the request stops here.
    if params.get("aud", "").rstrip("/") != fhir_base.rstrip("/"):
        raise refuse("invalid_request", "aud must be this server's FHIR base URL")
    nonce = params.get("nonce")
    if nonce is not None and len(nonce) > MAX_ECHOED_CHARS:
        raise refuse("invalid_request", "nonce is too long")
    requested = parse_scopes(params.get("scope", ""))
    granted = grantable(parse_scopes(client.scopes), requested)
    if not str(granted):
        raise refuse("invalid_scope", "none of the requested scopes can be granted")
    launch = params.get("launch")
    patient = encounter = None
    if launch is not None or requested.launch:
        # SMART "EHR launch": the `launch` scope and the `launch` parameter go together.
        if launch is None or not requested.launch:
            raise refuse("invalid_request", "an EHR launch needs both the launch scope and value")
        if not granted.launch:
            raise refuse("invalid_scope", "this application may not be launched from the EHR")
        context = await get_launch(store, launch, now)
        if context is None:
            raise refuse("invalid_request", "unknown or expired launch")
        patient, encounter = context.patient, context.encounter
    return PendingAuthorization(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        state=state,
        scopes=str(granted),
        code_challenge=challenge,
        nonce=nonce,
        launch_patient=patient,
        launch_encounter=encounter,
    )


def grantable(registered: Scopes, requested: Scopes) -> Scopes:
    """The requested scopes within the client's registration, `system/` ones left out."""
    within = narrow(registered, requested)
    personal = tuple(p for p in within.permissions if p.context != Context.SYSTEM)
    return Scopes(personal, within.flags, within.ignored)


def approved_scopes(offered: Scopes, kept: Collection[str]) -> Scopes:
    """What the user approved: the offered resource scopes they left ticked (by their
    text), and the launch and identity scopes, which the screen lists but which only
    carry the context the user already chose."""
    permissions = tuple(p for p in offered.permissions if str(p) in kept)
    return Scopes(permissions, offered.flags)


async def patient_context(
    reader: Reader, pending: PendingAuthorization, fhir_user: str
) -> PatientContext:
    """Whose record the grant is about (SMART "launch/patient", "fhirUser").

    A Patient user is their own patient and a RelatedPerson user the patient their
    RelatedPerson resource names: an EHR launch for anyone else is refused. A
    practitioner gets the EHR launch's context, or picks a patient when the app asked
    for `launch/patient` in a standalone launch."""
    user_type, _, user_id = fhir_user.partition("/")
    own: str | None = None
    if user_type == "Patient":
        own = user_id
    elif user_type == "RelatedPerson":
        own = await _related_patient(reader, user_id)
        if own is None:
            raise _denied(pending, "this user is linked to no patient")
    if own is not None:
        if pending.launch_patient not in (None, own):
            raise _denied(pending, "this launch is for another patient")
        return PatientContext(own, pending.launch_encounter if pending.launch_patient else None)
    if pending.launch_patient is not None:
        return PatientContext(pending.launch_patient, pending.launch_encounter)
    pick = user_type in PICKING_USERS and parse_scopes(pending.scopes).launch_patient
    return PatientContext(pick=pick)


async def _related_patient(reader: Reader, related_person_id: str) -> str | None:
    version = await reader.read("RelatedPerson", related_person_id)
    if version is None or version.body is None:
        return None
    reference = local_reference(codec.load_object(version.body).get("patient"))
    if reference is None or not reference.startswith("Patient/"):
        return None
    return reference.removeprefix("Patient/")


def _denied(pending: PendingAuthorization, description: str) -> AuthorizeError:
    return AuthorizeError("access_denied", description, pending.redirect_uri, pending.state)


def denied(pending: PendingAuthorization) -> AuthorizeError:
    """The user declined (RFC 6749 section 4.1.2.1 `access_denied`)."""
    return _denied(pending, "the user declined")


async def issue_code(
    store: Store,
    pending: PendingAuthorization,
    user: User,
    context: PatientContext,
    scopes: Scopes,
    now: datetime,
    lifetime: timedelta,
) -> str:
    """Save the grant under a new one-time code that expires after `lifetime` (RFC 6749
    section 4.1.2; the server's `code_lifetime`, a minute) and return the redirect to
    the client with `code` and `state`. Nothing approved is a refusal."""
    if not str(scopes):
        raise _denied(pending, "no scope was approved")
    code = secrets.token_urlsafe(32)
    grant = AuthorizationGrant(
        client_id=pending.client_id,
        redirect_uri=pending.redirect_uri,
        scopes=str(scopes),
        code_challenge=pending.code_challenge,
        username=user.username,
        fhir_user=user.fhir_user,
        patient=context.patient,
        encounter=context.encounter,
        nonce=pending.nonce,
    )
    await save_code(store, code, grant, now + lifetime)
    return redirect_to(pending.redirect_uri, {"code": code, "state": pending.state})


def redirect_to(redirect_uri: str, params: Mapping[str, str | None]) -> str:
    """The redirect URI with `params` added to its query, which RFC 6749 section 3.1.2
    says "MUST be retained"; parameters that are None are left out."""
    parts = urlsplit(redirect_uri)
    added = urlencode({name: value for name, value in params.items() if value is not None})
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query, fragment=""))


def redirect_origin(redirect_uri: str) -> str:
    """scheme://host[:port] of a redirect URI (for the pages' CSP form-action)."""
    parts = urlsplit(redirect_uri)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class PatientChoice:
    """A patient as the picker and the approval screen show one."""

    patient_id: str
    name: str
    birth_date: str | None = None


async def find_patients(reader: Reader, name: str, limit: int) -> tuple[list[PatientChoice], bool]:
    """Up to `limit` Patients whose name matches `name` (all when empty), and whether
    there are more (the picker then asks for a narrower search)."""
    criteria = [("name", _escape(name.strip()[:100]))] if name.strip() else []
    query = parse_search(("Patient",), [*criteria, ("_count", str(limit + 1))], strict=True)
    matches = (await reader.search(query)).matches
    choices = [c for c in map(_choice, matches[:limit]) if c is not None]
    return choices, len(matches) > limit


async def find_patient(reader: Reader, patient_id: str) -> PatientChoice | None:
    """The Patient with this id, if it exists (a picked id is the browser's word only)."""
    if not _ID.fullmatch(patient_id):
        return None
    return _choice(await reader.read("Patient", patient_id))


def _choice(version: Version | None) -> PatientChoice | None:
    if version is None or version.body is None:
        return None
    patient = codec.load_object(version.body)
    birth_date = patient.get("birthDate")
    return PatientChoice(
        version.id, _display_name(patient), birth_date if isinstance(birth_date, str) else None
    )


def _display_name(patient: JSONObject) -> str:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str) and name["text"].strip():
            return str(name["text"]).strip()
        given = [g for g in name.get("given") or [] if isinstance(g, str)]
        family = name.get("family") if isinstance(name.get("family"), str) else None
        parts = [*given, *([family] if family else [])]
        if parts:
            return " ".join(parts)
    return "(no name)"


def _escape(value: str) -> str:
    """A search value taken literally (R4 search.html#escaping): `, | $ \\` escaped."""
    for special in ("\\", ",", "|", "$"):
        value = value.replace(special, "\\" + special)
    return value
