"""The bearer token of a request as an `Access` (DESIGN.md "Authorization"), and the
AuditEvent of a refused one.

One place turns the `Authorization` header into the `Access` every interaction takes;
endpoints never look at scopes. With authorization off the app has no authenticator and
every request gets `Access.everything()`.
"""

from __future__ import annotations

import logging

from starlette.requests import Request

from fhirserver.auth.access import Access
from fhirserver.auth.audit_refusals import refusal_event
from fhirserver.auth.authenticate import Authenticator
from fhirserver.auth.errors import InvalidToken, MissingToken
from fhirserver.errors import FHIRError, Forbidden
from fhirserver.interactions import crud
from fhirserver.interactions.paths import Target
from fhirserver.interactions.rules import WriteContext
from fhirserver.rest.ratelimit import RateLimit, client_key
from fhirserver.storage.base import Store
from fhirserver.storage.retry import run_unit

logger = logging.getLogger("fhirserver")
EVERYTHING = Access.everything()
REFUSALS_AUDITED_PER_MINUTE = 10


def refusal_audit_limit() -> RateLimit:
    """How many refusals per client address become AuditEvents (app.state)."""
    return RateLimit(REFUSALS_AUDITED_PER_MINUTE, burst=REFUSALS_AUDITED_PER_MINUTE)


# Where a refused request went -> its R4 restful-interaction code.
_INTERACTIONS = {
    ("instance", "GET"): "read",
    ("instance", "PUT"): "update",
    ("instance", "PATCH"): "patch",
    ("instance", "DELETE"): "delete",
    ("version", "GET"): "vread",
    ("instance-history", "GET"): "history-instance",
    ("type-history", "GET"): "history-type",
    ("system-history", "GET"): "history-system",
    ("type", "GET"): "search-type",
    ("type-search", "POST"): "search-type",
    ("type", "POST"): "create",
    ("type", "PUT"): "update",
    ("type", "PATCH"): "patch",
    ("type", "DELETE"): "delete",
    ("system", "GET"): "search-system",
    ("system-search", "POST"): "search-system",
    ("system", "POST"): "transaction",
    ("compartment", "GET"): "search-type",
    ("instance-operation", "POST"): "operation",
}


async def request_access(request: Request) -> Access:
    """The request's `Access`: everything when authorization is off; else what its
    bearer token holds (401 without one, or with one that does not hold)."""
    authenticator: Authenticator | None = request.app.state.authenticator
    if authenticator is None:
        return EVERYTHING
    header = request.headers.get("authorization")
    if header is None:
        raise MissingToken()
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header does not hold a Bearer token")
    try:
        access = await authenticator(token.strip())
    except InvalidToken as refused:
        await audit_refusal(request, None, refused)
        raise
    request.state.access = access
    return access


async def audit_refusal(request: Request, target: Target | None, refused: FHIRError) -> None:
    """Record a refused access (an invalid token, or scopes that do not cover the
    request) as an AuditEvent, up to `REFUSALS_AUDITED_PER_MINUTE` per client address. A
    request with no token at all is not recorded: it names nobody. Never fails the
    response."""
    if not isinstance(refused, InvalidToken | Forbidden):
        return
    limit: RateLimit = request.app.state.refusal_audit_limit
    if limit.take(client_key(request)):
        # Past a few a minute from one address, further refusals are not recorded: a
        # flood of made-up tokens must not fill the store.
        return
    store: Store = request.app.state.store
    writes: WriteContext = request.app.state.writes
    kind = target.kind if target is not None else "system"
    event = refusal_event(
        writes.clock(),
        request.method,
        _INTERACTIONS.get((kind, request.method), "operation"),
        request.url.path,
        refused.issues[0].diagnostics if refused.issues else "refused",
        getattr(request.state, "access", None),
        request.client.host if request.client else None,
    )
    try:
        await run_unit(store, lambda unit: crud.write_new(unit, writes.as_server(), event))
    except Exception:  # the refusal stands even if its record cannot be written
        logger.exception("could not record a refused access")
