"""The SMART standalone launch through the HTML pages (SMART App Launch 2.2
app-launch.html "Obtain authorization code", RFC 6749 section 4.1 and 4.1.2.1,
RFC 7636): login, patient picker, approval, the redirect with code and state, and the
refusals on the way."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette

from fhirserver.auth.passwords import ScryptParameters, hash_password
from fhirserver.auth.registry import User, put_user
from fhirserver.rest.ratelimit import RateLimit
from tests.auth.browser import (
    CLIENT_ID,
    PASSWORD,
    REDIRECT_URI,
    Pkce,
    app_clock,
    authorize_params,
    authorize_url,
    backend,
    browser,
    exchange,
    forms,
    log_in,
    only_form,
    put_resource,
    redirect_query,
    smart_app,
    submit,
)
from tests.clock import MovableClock

__all__ = ["app_clock", "backend", "browser", "smart_app"]

PRACTITIONER_SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


async def test_practitioner_picks_a_patient_narrows_scopes_and_gets_tokens(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    pkce = Pkce()
    scope = "launch/patient openid fhirUser offline_access patient/Observation.rs patient/*.rs"
    params = authorize_params(pkce, scope)
    picker = await log_in(browser, params, "dr.who")
    assert picker.status_code == 200
    assert "Choose a patient" in picker.text
    search, _ = forms(picker.text)
    found = await submit(browser, search, search.submission(name="Jones"))
    assert "Bob Jones" in found.text and "Carol Jones" in found.text
    assert "Alice" not in found.text
    _, choose = forms(found.text)
    approval = await submit(browser, choose, choose.submission(patient="bob"))
    assert "Bob Jones" in approval.text and CLIENT_ID in approval.text
    assert "Read and search Observation records of the selected patient" in approval.text
    form = only_form(approval)
    assert [value for value, checked in form.choices["scope"] if checked] == [
        "patient/Observation.rs",
        "patient/*.rs",
    ]
    answer = await submit(
        browser, form, form.submission(scope=["patient/Observation.rs"], decision="approve")
    )
    assert answer.status_code == 303
    query = redirect_query(answer)
    assert query["state"] == params["state"]

    tokens = await exchange(browser, query["code"], pkce)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["patient"] == "bob"
    granted = body["scope"].split()
    assert "patient/Observation.rs" in granted and "patient/*.rs" not in granted
    assert {"launch/patient", "openid", "fhirUser", "offline_access"} <= set(granted)
    assert body["id_token"] and body["refresh_token"]
    access = await smart_app.state.authenticator(body["access_token"])
    assert (access.patient, access.user) == ("bob", "Practitioner/7")
    refreshed = await browser.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": CLIENT_ID,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["patient"] == "bob"
    assert "patient/*.rs" not in refreshed.json()["scope"].split()


async def test_a_code_is_exchanged_once_and_only_with_its_verifier(
    browser: httpx.AsyncClient,
) -> None:
    pkce = Pkce()
    form = only_form(await log_in(browser, authorize_params(pkce, "patient/*.rs"), "alice"))
    code = redirect_query(await submit(browser, form, form.submission(decision="approve")))["code"]
    wrong = await exchange(browser, code, Pkce())
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    pkce2 = Pkce()
    form = only_form(await log_in(browser, authorize_params(pkce2, "patient/*.rs"), "alice"))
    code = redirect_query(await submit(browser, form, form.submission(decision="approve")))["code"]
    assert (await exchange(browser, code, pkce2)).status_code == 200
    assert (await exchange(browser, code, pkce2)).json()["error"] == "invalid_grant"


async def test_only_a_patient_on_this_server_can_be_picked(
    browser: httpx.AsyncClient,
) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    _, choose = forms((await log_in(browser, params, "dr.who")).text)
    for made_up in ("nobody", "../Patient/bob", ""):
        answer = await submit(browser, choose, choose.submission(patient=made_up))
        assert answer.status_code == 400
        assert "Choose a patient" in answer.text and "Allow access?" not in answer.text


async def test_a_patient_user_cannot_reach_the_picker(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    approval = only_form(await log_in(browser, params, "alice"))
    fields = [(n, v) for n, v in approval.fields] + [("patient", "bob")]
    answer = await browser.post(
        "/auth/authorize/patient",
        content=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400 and "Allow access?" not in answer.text


async def test_a_patient_user_is_their_own_patient_without_a_picker(
    browser: httpx.AsyncClient,
) -> None:
    pkce = Pkce()
    params = authorize_params(pkce, PRACTITIONER_SCOPE)
    approval = await log_in(browser, params, "alice")
    assert "Allow access?" in approval.text and "Alice Smith" in approval.text
    form = only_form(approval)
    answer = await submit(browser, form, form.submission(decision="approve"))
    tokens = await exchange(browser, redirect_query(answer)["code"], pkce)
    assert tokens.json()["patient"] == "alice"
    assert "refresh_token" in tokens.json()


async def test_a_related_person_gets_the_patient_they_are_related_to(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    await put_resource(
        smart_app,
        {"resourceType": "RelatedPerson", "id": "mum", "patient": {"reference": "Patient/bob"}},
    )
    hashed = hash_password(PASSWORD, ScryptParameters(log2_n=4))
    await put_user(smart_app.state.store, User("mum", "RelatedPerson/mum", hashed))
    pkce = Pkce()
    approval = await log_in(browser, authorize_params(pkce, PRACTITIONER_SCOPE), "mum")
    assert "Bob Jones" in approval.text and "Choose a patient" not in approval.text
    form = only_form(approval)
    answer = await submit(browser, form, form.submission(decision="approve"))
    tokens = await exchange(browser, redirect_query(answer)["code"], pkce)
    assert tokens.json()["patient"] == "bob"


async def test_scopes_beyond_the_registration_are_not_offered(
    browser: httpx.AsyncClient,
) -> None:
    params = authorize_params(Pkce(), "patient/*.rs patient/*.cud system/*.rs")
    approval = await log_in(browser, params, "alice")
    form = only_form(approval)
    assert [value for value, _ in form.choices["scope"]] == ["patient/*.rs"]


async def test_the_user_declining_sends_access_denied_with_the_state(
    browser: httpx.AsyncClient,
) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await log_in(browser, params, "alice"))
    answer = await submit(browser, form, form.submission(decision="deny"))
    assert answer.status_code == 303
    query = redirect_query(answer)
    assert query["error"] == "access_denied" and query["state"] == params["state"]
    assert "code" not in query


async def test_unticking_every_scope_grants_nothing(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), "patient/*.rs")
    form = only_form(await log_in(browser, params, "alice"))
    answer = await submit(browser, form, form.submission(scope=[], decision="approve"))
    assert redirect_query(answer)["error"] == "access_denied"


async def test_an_approval_is_answered_once(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await log_in(browser, params, "alice"))
    first = await submit(browser, form, form.submission(decision="approve"))
    again = await submit(browser, form, form.submission(decision="approve"))
    assert "code" in redirect_query(first)
    assert again.status_code == 400 and "location" not in again.headers


# -- the request, before the user sees anything --------------------------------------------


async def test_plain_pkce_is_refused(browser: httpx.AsyncClient) -> None:
    # A 43-character verifier: as a plain challenge it looks like an S256 one.
    pkce = Pkce(secrets.token_urlsafe(32))
    params = authorize_params(
        pkce, PRACTITIONER_SCOPE, code_challenge=pkce.verifier, code_challenge_method="plain"
    )
    answer = await browser.get(authorize_url(params))
    assert answer.status_code == 302
    query = redirect_query(answer)
    assert query["error"] == "invalid_request" and query["state"] == params["state"]


async def test_missing_pkce_is_refused(browser: httpx.AsyncClient) -> None:
    for missing in ({"code_challenge": None}, {"code_challenge_method": None}):
        params = authorize_params(Pkce(), PRACTITIONER_SCOPE, **missing)
        answer = await browser.get(authorize_url(params))
        assert redirect_query(answer)["error"] == "invalid_request"


async def test_an_unregistered_redirect_uri_shows_an_error_page_and_never_redirects(
    browser: httpx.AsyncClient,
) -> None:
    for changes in (
        {"redirect_uri": "https://evil.example/callback"},
        {"redirect_uri": REDIRECT_URI + "/"},
        {"redirect_uri": None},
        {"client_id": "nobody"},
    ):
        params = authorize_params(Pkce(), PRACTITIONER_SCOPE, **changes)
        answer = await browser.get(authorize_url(params))
        assert answer.status_code == 400
        assert "location" not in answer.headers
        assert "text/html" in answer.headers["content-type"]
        assert "evil.example" not in answer.text


async def test_another_audience_is_refused(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE, aud="https://other.example/fhir")
    answer = await browser.get(authorize_url(params))
    assert redirect_query(answer)["error"] == "invalid_request"


async def test_the_request_may_come_as_a_form_post(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    answer = await browser.post("/auth/authorize", data=params)
    assert answer.status_code == 200 and "Sign in" in answer.text


async def test_the_pages_cannot_be_framed_cached_or_leak_a_referrer(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.get(authorize_url(authorize_params(Pkce(), PRACTITIONER_SCOPE)))
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "form-action 'self' https://app.example" in policy
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/auth" in cookie


async def test_values_from_the_request_are_escaped(browser: httpx.AsyncClient) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    search, *_ = forms((await log_in(browser, params, "dr.who")).text)
    typed = '"><script>alert(1)</script>'
    found = await submit(browser, search, search.submission(name=typed))
    assert found.status_code == 200
    assert "<script>" not in found.text
    assert forms(found.text)[0].text_inputs == ["name"]


# -- CSRF, login failures, rate limit, code lifetime -----------------------------------------


async def test_a_form_without_the_sessions_csrf_token_is_refused(
    browser: httpx.AsyncClient,
) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await browser.get(authorize_url(params)))
    good = form.submission(username="alice", password=PASSWORD)
    missing = [(name, value) for name, value in good if name != "csrf_token"]
    wrong = [(n, "x" * 43 if n == "csrf_token" else v) for n, v in good]
    for fields in (missing, wrong):
        answer = await submit(browser, form, fields)
        assert answer.status_code == 403
        assert "location" not in answer.headers
    # Another browser (no session cookie) with the right token is refused too.
    other = httpx.AsyncClient(transport=browser._transport, base_url="http://testserver")
    async with other:
        assert (await submit(other, form, good)).status_code == 403


async def test_a_flow_belongs_to_the_browser_that_started_it(
    browser: httpx.AsyncClient,
) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    theirs = only_form(await browser.get(authorize_url(params)))
    other = httpx.AsyncClient(transport=browser._transport, base_url="http://testserver")
    async with other:
        mine = only_form(await other.get(authorize_url(params)))
        # Another browser's flow with this browser's own (valid) CSRF token.
        fields = mine.submission(username="alice", password=PASSWORD)
        stolen = [(n, theirs.hidden("flow") if n == "flow" else v) for n, v in fields]
        answer = await submit(other, mine, stolen)
        assert answer.status_code == 400 and "Sign in" not in answer.text


async def test_wrong_password_and_unknown_user_get_the_same_page_and_an_audit_event(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await browser.get(authorize_url(params)))
    wrong = await submit(browser, form, form.submission(username="alice", password="guess"))
    unknown = await submit(browser, form, form.submission(username="mallory", password="guess"))
    assert wrong.status_code == unknown.status_code == 200
    assert wrong.text == unknown.text
    assert "unknown username or wrong password" in wrong.text
    store = smart_app.state.store
    events = [v for v in await store.scan(None, 100) if v.resource_type == "AuditEvent"]
    assert len(events) == 2
    for event in events:
        assert event.body is not None
        assert b"guess" not in event.body and b"110122" in event.body


async def test_failed_logins_lock_out_only_the_address_that_failed(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    """Issue 20 point 3: failures count per (address, username) and per address, so
    nobody can lock a user out by failing logins as them."""
    smart_app.state.login_limits = (RateLimit(60, burst=100), RateLimit(1, burst=2))
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await browser.get(authorize_url(params)))
    for _ in range(2):
        answer = await submit(browser, form, form.submission(username="alice", password="x"))
        assert answer.status_code == 200
    limited = await submit(browser, form, form.submission(username="alice", password=PASSWORD))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    other = await submit(browser, form, form.submission(username="dr.who", password="x"))
    assert other.status_code == 200
    # Alice, from another address, signs in; again and again, successes cost nothing.
    transport = httpx.ASGITransport(app=smart_app, client=("10.0.0.2", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as alice:
        for _ in range(3):
            page = await log_in(alice, authorize_params(Pkce(), PRACTITIONER_SCOPE), "alice")
            assert page.status_code == 200 and "wrong password" not in page.text, page.text


async def test_logins_are_rate_limited_per_address(
    browser: httpx.AsyncClient, smart_app: Starlette
) -> None:
    smart_app.state.login_limits = (RateLimit(1, burst=2), RateLimit(60, burst=100))
    params = authorize_params(Pkce(), PRACTITIONER_SCOPE)
    form = only_form(await browser.get(authorize_url(params)))
    statuses = [
        (await submit(browser, form, form.submission(username=name, password="x"))).status_code
        for name in ("a", "b", "c")
    ]
    assert statuses == [200, 200, 429]


async def test_a_code_expires_after_a_minute(
    browser: httpx.AsyncClient, smart_app: Starlette, app_clock: MovableClock
) -> None:
    issued_at = smart_app.state.writes.clock()
    app_clock.move_to(issued_at)
    codes = []
    for _ in range(2):
        pkce = Pkce()
        form = only_form(await log_in(browser, authorize_params(pkce, "patient/*.rs"), "alice"))
        answer = await submit(browser, form, form.submission(decision="approve"))
        codes.append((redirect_query(answer)["code"], pkce))
    app_clock.move_to(issued_at + timedelta(seconds=59))
    assert (await exchange(browser, *codes[0])).status_code == 200
    app_clock.move_to(issued_at + timedelta(seconds=61))
    late = await exchange(browser, *codes[1])
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"
