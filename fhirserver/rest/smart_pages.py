"""The authorization server's pages: login, patient picker, approval and errors.

Plain server-rendered HTML with no script: one form per step, every field labelled,
every value from outside escaped with `html.escape` (quotes too, since values also
land in attributes). Every form carries the flow id and the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape

from fhirserver.auth.authorize import PatientChoice
from fhirserver.auth.scopes import (
    FHIR_USER,
    LAUNCH,
    LAUNCH_ENCOUNTER,
    LAUNCH_PATIENT,
    OFFLINE_ACCESS,
    ONLINE_ACCESS,
    OPENID,
    WILDCARD,
    Context,
    Interaction,
    Permission,
    Scopes,
)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 36rem; margin: 2rem auto;
  padding: 0 1rem; line-height: 1.5; color: #1a1a1a; }
label { display: block; margin-top: .75rem; }
input[type=text], input[type=password], input[type=search] { width: 100%;
  padding: .4rem; font-size: 1rem; box-sizing: border-box; }
button { margin-top: 1rem; margin-right: .5rem; padding: .5rem 1rem; font-size: 1rem; }
fieldset { margin-top: 1rem; }
.error { color: #a00000; font-weight: bold; }
"""
_FLAG_DESCRIPTIONS = {
    OPENID: "Know who you are (sign you in)",
    FHIR_USER: "See your own record as a user of this server",
    LAUNCH: "Start with the patient and encounter open in your EHR",
    LAUNCH_PATIENT: "Know which patient's record you chose",
    LAUNCH_ENCOUNTER: "Know which encounter is open",
    OFFLINE_ACCESS: "Keep access after you close the app, until access is revoked",
    ONLINE_ACCESS: "Keep access while you stay signed in",
}
_CONTEXTS = {
    Context.PATIENT: "of the selected patient",
    Context.USER: "that you may see",
    Context.SYSTEM: "of every patient",
}


def page(title: str, body: str) -> str:
    """A whole page around `body` (already HTML)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )


def error_page(title: str, message: str) -> str:
    return page(title, f"<p class=error>{escape(message)}</p>")


def _hidden(flow_id: str, csrf: str) -> str:
    return (
        f'<input type="hidden" name="flow" value="{escape(flow_id)}">'
        f'<input type="hidden" name="csrf_token" value="{escape(csrf)}">'
    )


def login_page(
    action: str, flow_id: str, csrf: str, client_id: str, error: str | None = None
) -> str:
    message = f'<p class=error role="alert">{escape(error)}</p>' if error else ""
    return page(
        "Sign in",
        f"<p>The application <strong>{escape(client_id)}</strong> asks to reach your "
        "health records. Sign in to continue.</p>"
        f"{message}"
        f'<form method="post" action="{escape(action)}">{_hidden(flow_id, csrf)}'
        '<label for="username">Username</label>'
        '<input type="text" id="username" name="username" autocomplete="username" required>'
        '<label for="password">Password</label>'
        '<input type="password" id="password" name="password" '
        'autocomplete="current-password" required>'
        "<button type=submit>Sign in</button></form>",
    )


def patient_page(
    action: str,
    flow_id: str,
    csrf: str,
    query: str,
    patients: Iterable[PatientChoice],
    more: bool,
) -> str:
    """The picker: a name search, then one radio button per patient found."""
    choices = "".join(
        f'<label><input type="radio" name="patient" value="{escape(p.patient_id)}" required> '
        f"{escape(p.name)}"
        + (f" (born {escape(p.birth_date)})" if p.birth_date else "")
        + "</label>"
        for p in patients
    )
    listing = (
        f'<form method="post" action="{escape(action)}">{_hidden(flow_id, csrf)}'
        f"<fieldset><legend>Patients</legend>{choices}</fieldset>"
        "<button type=submit>Continue with this patient</button></form>"
        if choices
        else "<p>No patient matches.</p>"
    )
    note = "<p>More patients match: narrow the search to see them.</p>" if more else ""
    return page(
        "Choose a patient",
        f'<form method="post" action="{escape(action)}" role="search">{_hidden(flow_id, csrf)}'
        '<label for="name">Search by name</label>'
        f'<input type="search" id="name" name="name" value="{escape(query)}">'
        "<button type=submit>Search</button></form>"
        f"{listing}{note}",
    )


def approval_page(
    action: str,
    flow_id: str,
    csrf: str,
    client_id: str,
    scopes: Scopes,
    user: str,
    patient: PatientChoice | None,
) -> str:
    """What the app asks for, each resource scope a ticked box the user may untick."""
    boxes = "".join(
        f'<label><input type="checkbox" name="scope" value="{escape(str(p))}" checked> '
        f"{escape(describe(p))} <code>{escape(str(p))}</code></label>"
        for p in scopes.permissions
    )
    flags = "".join(
        f"<li>{escape(description)}</li>"
        for flag, description in _FLAG_DESCRIPTIONS.items()
        if flag in scopes.flags
    )
    about = f"<p>Patient: <strong>{escape(patient.name)}</strong></p>" if patient else ""
    return page(
        "Allow access?",
        f"<p>Signed in as <strong>{escape(user)}</strong>.</p>{about}"
        f"<p>The application <strong>{escape(client_id)}</strong> asks to:</p>"
        f'<form method="post" action="{escape(action)}">{_hidden(flow_id, csrf)}'
        + (f"<fieldset><legend>Health data</legend>{boxes}</fieldset>" if boxes else "")
        + (f"<ul>{flags}</ul>" if flags else "")
        + '<button type=submit name="decision" value="approve">Allow</button>'
        '<button type=submit name="decision" value="deny">Deny</button></form>',
    )


def describe(permission: Permission) -> str:
    """A resource scope in words, e.g. "Read and search Observation records of the
    selected patient (only where category is laboratory)"."""
    interactions = permission.interactions
    verbs = [
        verb
        for interaction, verb in (
            (Interaction.READ, "read"),
            (Interaction.SEARCH, "search"),
            (Interaction.CREATE, "create"),
            (Interaction.UPDATE, "update"),
            (Interaction.DELETE, "delete"),
        )
        if interaction in interactions
    ]
    said = verbs[0] if len(verbs) == 1 else ", ".join(verbs[:-1]) + " and " + verbs[-1]
    what = (
        "all kinds of records"
        if permission.resource_type == WILDCARD
        else f"{permission.resource_type} records"
    )
    text = f"{said.capitalize()} {what} {_CONTEXTS[permission.context]}"
    if permission.restriction:
        only = " and ".join(f"{name} is {value}" for name, value in permission.restriction)
        text += f" (only where {only})"
    return text
