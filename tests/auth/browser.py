"""A browser for the authorization pages' tests: the app in smart mode on every backend,
a registered app and users, and the pages' forms read with `html.parser` and submitted
the way a browser would (its cookies kept by httpx)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.auth.passwords import ScryptParameters, hash_password
from fhirserver.auth.registry import Client, User, put_client, put_user
from fhirserver.config import Settings
from fhirserver.interactions import crud
from fhirserver.resources.codec import JSONObject
from tests.backends import BACKENDS, Backend
from tests.clock import MovableClock

FHIR_BASE = "http://testserver/fhir"
CLIENT_ID = "growth-chart"
REDIRECT_URI = "https://app.example/callback"
CLIENT_SCOPES = (
    "launch launch/patient openid fhirUser offline_access "
    "patient/*.rs patient/Observation.rs user/*.rs"
)
PASSWORD = "correct horse battery staple"
# Cheap hashes: the tests are about the flow, not the hash's cost.
_TEST_SCRYPT = ScryptParameters(log2_n=4)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def smart_app(
    settings: Settings, test_backend: Backend, app_clock: MovableClock
) -> AsyncIterator[Starlette]:
    smart = settings.with_overrides(auth="smart", public_url=FHIR_BASE)
    app = create_app(smart, store=test_backend.store, clock=app_clock)
    async with app.router.lifespan_context(app):
        await put_client(
            app.state.store,
            Client(CLIENT_ID, "public", CLIENT_SCOPES, redirect_uris=(REDIRECT_URI,)),
        )
        for username, fhir_user in (("dr.who", "Practitioner/7"), ("alice", "Patient/alice")):
            hashed = hash_password(PASSWORD, _TEST_SCRYPT)
            await put_user(app.state.store, User(username, fhir_user, hashed))
        for patient_id, given, family in (
            ("alice", "Alice", "Smith"),
            ("bob", "Bob", "Jones"),
            ("carol", "Carol", "Jones"),
        ):
            await put_resource(
                app,
                {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "name": [{"given": [given], "family": family}],
                    "birthDate": "1980-01-01",
                },
            )
        yield app


async def put_resource(app: Starlette, resource: JSONObject) -> None:
    """Store a resource directly (not over the API, which needs a token in smart mode)."""
    kind, resource_id = resource["resourceType"], resource["id"]
    await crud.update(app.state.store, app.state.writes, kind, resource_id, resource)


@pytest.fixture
async def browser(smart_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A browser at the server: keeps cookies, follows no redirect (the tests look at
    each one)."""
    transport = httpx.ASGITransport(app=smart_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class Pkce:
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def authorize_params(pkce: Pkce, scope: str, **changes: str | None) -> dict[str, str]:
    """An authorization request as SMART 2.2 app-launch.html shows one."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": "st-" + secrets.token_urlsafe(8),
        "aud": FHIR_BASE,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def authorize_url(params: dict[str, str]) -> str:
    return "/auth/authorize?" + urlencode(params)


def redirect_query(response: httpx.Response) -> dict[str, str]:
    """The query of a redirect to the client, which must go to its redirect URI."""
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


@dataclass
class Form:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    # name -> [(value, checked)] of checkboxes and radio buttons
    choices: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    text_inputs: list[str] = field(default_factory=list)

    def hidden(self, name: str) -> str:
        return next(value for key, value in self.fields if key == name)

    def submission(self, **values: str | list[str]) -> list[tuple[str, str]]:
        """What a browser sends: hidden fields, checked boxes, then `values` (a list for
        a field given several times; a button's name and value among them)."""
        sent = list(self.fields)
        for name, options in self.choices.items():
            if name not in values:
                sent += [(name, value) for value, checked in options if checked]
        for name, value in values.items():
            sent += [(name, v) for v in ([value] if isinstance(value, str) else value)]
        return sent


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(attributes.get("action", ""), attributes.get("method", "")))
            return
        if not self.forms:
            return
        form = self.forms[-1]
        kind, name = attributes.get("type", "text"), attributes.get("name", "")
        if tag == "input" and kind == "hidden":
            form.fields.append((name, attributes.get("value", "")))
        elif tag == "input" and kind in ("checkbox", "radio"):
            form.choices.setdefault(name, []).append(
                (attributes.get("value", ""), "checked" in attributes)
            )
        elif tag == "input":
            form.text_inputs.append(name)
        elif tag == "button" and name:
            form.buttons.append((name, attributes.get("value", "")))


def forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def only_form(response: httpx.Response) -> Form:
    found = forms(response.text)
    assert len(found) == 1, response.text
    return found[0]


async def submit(
    http: httpx.AsyncClient, form: Form, fields: list[tuple[str, str]]
) -> httpx.Response:
    assert form.method == "post"
    return await http.post(
        form.action,
        content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def log_in(
    http: httpx.AsyncClient, params: dict[str, str], username: str, password: str = PASSWORD
) -> httpx.Response:
    """Open the authorization request and sign in; the page after the login form."""
    page = await http.get(authorize_url(params))
    assert page.status_code == 200, page.text
    form = only_form(page)
    return await submit(http, form, form.submission(username=username, password=password))


async def exchange(
    http: httpx.AsyncClient, code: str, pkce: Pkce, **changes: str
) -> httpx.Response:
    """The app's token request for its code (RFC 6749 section 4.1.3, RFC 7636 4.5)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": CLIENT_ID,
        "code_verifier": pkce.verifier,
        **changes,
    }
    return await http.post("/auth/token", data=form)
