"""Checking a user's password at the login page, and the AuditEvent of a failed login.

The check costs one scrypt hash whether or not the user exists (`verify_password`
hashes anyway when there is no stored hash), so the time a login takes does not tell
which usernames exist; it runs in a worker thread because a memory-hard hash would
otherwise hold up every other request of the process for its whole duration.

A failed login is recorded as an AuditEvent in the shape of IHE Basic Audit Log
Patterns (BALP) "Login" (DICOM 110114 User Authentication / 110122 Login, outcome 4
minor failure), with the agents and source of the token endpoint's events
(`auth/audit.py`): who tried (the username typed, never the password), from which
address, for which client application.
"""

from __future__ import annotations

import asyncio
import unicodedata
from datetime import datetime

from fhirserver.auth.audit import APPLICATION, DCM, HUMAN_USER, REFUSED, SOURCE_TYPE
from fhirserver.auth.passwords import MAX_PASSWORD_CHARS, verify_password
from fhirserver.auth.registry import User, get_user
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.meta import format_instant
from fhirserver.storage.base import Store

# Longer than any registered username (registry: 1 to 255 characters).
MAX_USERNAME_CHARS = 255
FAILED_LOGIN = "unknown username or wrong password"


async def log_in(store: Store, username: str, password: str, now: datetime) -> User | None:
    """The user whose password this is, or None (unknown user, wrong password, or a
    username or password of impossible length), after one hash either way."""
    user = None
    if 0 < len(username) <= MAX_USERNAME_CHARS:
        user = await get_user(store, username, now)
    stored = user.password_hash if user is not None else None
    ok = await asyncio.to_thread(verify_password, password[: MAX_PASSWORD_CHARS + 1], stored)
    return user if ok and user is not None else None


def failed_login_event(
    *, at: datetime, issuer: str, username: str, client_id: str, address: str | None
) -> JSONObject:
    """The AuditEvent of a refused login, in the shape of the token endpoint's
    (`auth/audit.py`): the user as the username typed (cleaned, bounded; never the
    password), the client application, the caller's address."""
    user: JSONObject = {
        "type": {"coding": [HUMAN_USER]},
        "who": {"identifier": {"value": clean_username(username) or "(none)"}},
        "requestor": True,
    }
    client: JSONObject = {
        "type": {"coding": [APPLICATION]},
        "who": {"identifier": {"system": issuer, "value": client_id[:MAX_USERNAME_CHARS]}},
        "requestor": False,
    }
    if address:
        # AuditEvent.agent.network.type 2: an IP address.
        user["network"] = {"address": address[:64], "type": "2"}
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DCM, "code": "110122", "display": "Login"}],
        "action": "E",
        "recorded": format_instant(at),
        "outcome": REFUSED,
        "outcomeDesc": FAILED_LOGIN,
        "agent": [user, client],
        "source": {"observer": {"display": f"fhirserver ({issuer})"}, "type": [SOURCE_TYPE]},
    }


def clean_username(username: str) -> str:
    """The username as it may be recorded: without control characters, bounded."""
    kept = "".join(c for c in username if unicodedata.category(c)[0] != "C")
    return kept[:MAX_USERNAME_CHARS]
