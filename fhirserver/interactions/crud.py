"""create, read, vread, update, patch and delete, with their conditional forms (R4 http.html).

Every write runs in one unit of work: conditional matching, version checks and the
write itself see one consistent store, so two clients cannot both win a race. A unit
that loses a race on a store whose units run concurrently (MongoDB) is run again
from its first read (`storage.retry.run_unit`).

The steps that run inside a caller's unit of work (`write_new`, `update_in`, `patch_in`,
`delete_in`, `match_one`, `conditional_update_id`) are the shared API: the single
interactions here call them, and so does a transaction (transaction.py) for each entry.
What a request must meet before it writes is parsed in preconditions.py, patch bodies in
patches.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fhirserver.auth.access import Access
from fhirserver.auth.confine import confine, unrestricted
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import (
    BadRequest,
    FHIRError,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
    TooCostly,
    Unprocessable,
)
from fhirserver.interactions.checked import CheckedResource, portable
from fhirserver.interactions.guard import hidden, require, require_visible, require_write
from fhirserver.interactions.patches import Patcher
from fhirserver.interactions.preconditions import (
    NO_PRECONDITIONS,
    Preconditions,
    check_body_id,
    check_preconditions,
)
from fhirserver.interactions.rules import Change, WriteContext
from fhirserver.interactions.search import holding
from fhirserver.resources import codec, meta
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.validate import validate
from fhirserver.search.confirm import needs_confirmation
from fhirserver.search.extract import INDEX_CUT, index_entries
from fhirserver.search.params import registry
from fhirserver.search.parse import parse_criteria
from fhirserver.search.query import IndexEntry, SearchQuery
from fhirserver.storage.base import Reader, Store, UnitOfWork, Version
from fhirserver.storage.retry import run_unit

Params = Sequence[tuple[str, str]]
EVERYTHING = Access.everything()
# Candidates a conditional write confirms when index values may have been cut.
CONFIRM_AT_MOST = 1000
# A conditional action -> what the writer must be allowed on the resources it matches.
_MATCHED = {
    "create": Interaction.CREATE,
    "update": Interaction.UPDATE,
    "patch": Interaction.UPDATE,
    "delete": Interaction.DELETE,
}


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    # True when the write made a resource exist (201), False for an update or a match (200).
    created: bool


async def read(
    store: Reader, resource_type: str, resource_id: str, access: Access = EVERYTHING
) -> Version:
    require(access, Interaction.READ, resource_type)
    found = await store.read(resource_type, meta.check_id(resource_id))
    if hidden(access, Interaction.READ, found):
        found = None  # a deletion too: 410 would tell that it existed
    return _existing(found, resource_type, resource_id)


async def vread(
    store: Reader,
    resource_type: str,
    resource_id: str,
    version_id: str,
    access: Access = EVERYTHING,
) -> Version:
    require(access, Interaction.READ, resource_type)
    number = meta.whole_number(version_id)
    if number is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id!r}")
    found = await store.vread(resource_type, meta.check_id(resource_id), number)
    unknown = f"{resource_type}/{resource_id} has no version {version_id}"
    if found is None:
        raise NotFound(unknown)
    require_visible(access, Interaction.READ, found, unknown)
    if found.deleted:
        raise Gone(f"Version {version_id} of {resource_type}/{resource_id} is a deletion")
    return found


async def create(
    store: Store,
    context: WriteContext,
    resource_type: str,
    resource: JSONObject | CheckedResource,
    if_none_exist: Params | None = None,
) -> WriteResult:
    resource, index = _checked(resource, resource_type)

    async def work(unit: UnitOfWork) -> WriteResult:
        if if_none_exist is not None:
            existing = await match_one(unit, context, resource_type, if_none_exist, "create")
            if existing is not None:
                if hidden(context.access, Interaction.READ, existing):
                    # The answer would show it: a create-only token may not read it.
                    raise Forbidden(
                        "If-None-Exist matched a resource this access token may not read"
                    )
                return WriteResult(existing, created=False)
        # R4 http.html#create: an id in the body is ignored; the server assigns one.
        return await write_new(unit, context, resource, index=index)

    return await run_unit(store, work)


async def update(
    store: Store,
    context: WriteContext,
    resource_type: str,
    resource_id: str,
    resource: JSONObject | CheckedResource,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> WriteResult:
    meta.check_id(resource_id)
    resource, index = _checked(resource, resource_type)
    check_body_id(resource, resource_id)

    async def work(unit: UnitOfWork) -> WriteResult:
        current = await unit.read(resource_type, resource_id)
        return await update_in(unit, context, resource, resource_id, current, preconditions, index)

    return await run_unit(store, work)


async def conditional_update(
    store: Store,
    context: WriteContext,
    resource_type: str,
    criteria: Params,
    resource: JSONObject | CheckedResource,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> WriteResult:
    resource, index = _checked(resource, resource_type)

    async def work(unit: UnitOfWork) -> WriteResult:
        resource_id = await conditional_update_id(unit, context, resource_type, criteria, resource)
        current = await unit.read(resource_type, resource_id)
        return await update_in(unit, context, resource, resource_id, current, preconditions, index)

    return await run_unit(store, work)


async def patch(
    store: Store,
    context: WriteContext,
    resource_type: str,
    resource_id: str,
    patcher: Patcher,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> WriteResult:
    """`patcher`: from json_patch() or fhirpath_patch()."""
    meta.check_id(resource_id)

    async def work(unit: UnitOfWork) -> WriteResult:
        current = await unit.read(resource_type, resource_id)
        return await patch_in(
            unit, context, resource_type, resource_id, current, patcher, preconditions
        )

    return await run_unit(store, work)


async def conditional_patch(
    store: Store,
    context: WriteContext,
    resource_type: str,
    criteria: Params,
    patcher: Patcher,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> WriteResult:
    """PATCH [type]?[search] (R4 http.html#patch, matched as a conditional update is:
    several matches 412); no match is 404, as in a transaction's conditional patch."""

    async def work(unit: UnitOfWork) -> WriteResult:
        match = await match_one(unit, context, resource_type, criteria, "patch")
        if match is None:
            raise NotFound(f"Conditional patch: no {resource_type} matches")
        return await patch_in(unit, context, resource_type, match.id, match, patcher, preconditions)

    return await run_unit(store, work)


async def delete(
    store: Store,
    context: WriteContext,
    resource_type: str,
    resource_id: str,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> Version | None:
    """Delete; the tombstone version, or None when there was nothing to delete."""
    meta.check_id(resource_id)
    access = context.access
    require(access, Interaction.DELETE, resource_type)

    async def work(unit: UnitOfWork) -> Version | None:
        current = await unit.read(resource_type, resource_id)
        if not unrestricted(access, Interaction.DELETE, (resource_type,)) and (
            current is None or current.deleted or hidden(access, Interaction.DELETE, current)
        ):
            # Nothing this token could delete: the same answer whether or not someone
            # else's resource is there.
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return await delete_in(unit, context, current, preconditions)

    return await run_unit(store, work)


async def conditional_delete(
    store: Store,
    context: WriteContext,
    resource_type: str,
    criteria: Params,
    preconditions: Preconditions = NO_PRECONDITIONS,
) -> Version | None:
    """Conditional delete, `single` mode: several matches are refused with 412."""

    async def work(unit: UnitOfWork) -> Version | None:
        match = await match_one(unit, context, resource_type, criteria, "delete")
        check_preconditions(match, preconditions)
        return await _tombstone(unit, context, match)

    return await run_unit(store, work)


# The steps below run inside a caller's unit of work: one interaction's, or a
# whole transaction Bundle's. Resources reaching them are already validated.


async def conditional_update_id(
    unit: UnitOfWork,
    context: WriteContext,
    resource_type: str,
    criteria: Params,
    resource: JSONObject,
) -> str:
    """The id a conditional update writes to (R4 http.html#cond-update): the single
    match; or, with no match, the body's id or a new one."""
    body_id = resource.get("id")
    match = await match_one(unit, context, resource_type, criteria, "update")
    if match is None:
        if not isinstance(body_id, str):
            return meta.new_id(context.clock())
        current = await unit.read(resource_type, meta.check_id(body_id))
        _refuse_hidden(context, Interaction.UPDATE, current)
        if current is not None and not current.deleted:
            raise PreconditionFailed(
                f"{resource_type}/{body_id} exists but does not match the criteria"
            )
        return body_id
    if body_id is not None and body_id != match.id:
        raise BadRequest(
            f"The id in the body ({body_id!r}) is not the matched resource ({match.id!r})",
            expression="id",
        )
    return match.id


async def write_new(
    unit: UnitOfWork,
    context: WriteContext,
    resource: JSONObject,
    resource_id: str | None = None,
    index: tuple[IndexEntry, ...] | None = None,
) -> WriteResult:
    """A create, under `resource_id` if one was chosen already, else under a new id.
    `index`: the resource's index entries, when the caller has them already."""
    if resource_id is None:
        resource_id = meta.new_id(context.clock())
    return await _write(unit, context, resource, resource_id, None, "POST", index)


async def update_in(
    unit: UnitOfWork,
    context: WriteContext,
    resource: JSONObject,
    resource_id: str,
    current: Version | None,
    preconditions: Preconditions,
    index: tuple[IndexEntry, ...] | None = None,
) -> WriteResult:
    """`current`: the resource's current version as read in this unit, if any."""
    _refuse_hidden(context, Interaction.UPDATE, current)
    check_preconditions(current, preconditions)
    return await _write(unit, context, resource, resource_id, current, "PUT", index)


async def patch_in(
    unit: UnitOfWork,
    context: WriteContext,
    resource_type: str,
    resource_id: str,
    current: Version | None,
    patcher: Patcher,
    preconditions: Preconditions,
) -> WriteResult:
    require(context.access, Interaction.UPDATE, resource_type)
    if hidden(context.access, Interaction.UPDATE, current):
        current = None  # the patch must not run on it: its outcome would tell its content
    current = _existing(current, resource_type, resource_id)
    check_preconditions(current, preconditions)
    assert current.body is not None
    patched = patcher(codec.load_object(current.body))
    if not isinstance(patched, dict):
        raise Unprocessable("The patch does not leave a resource")
    if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise Unprocessable("A patch may not change the resource's type or id")
    try:
        # The patched resource is about the size of the stored one.
        await context.work(validate, patched, resource_type, cost=len(current.body))
    except FHIRError as exc:
        # R4 http.html#patch: a patch whose result is not valid is unprocessable.
        raise Unprocessable(
            f"The patched resource is not valid: {exc}", issues=exc.issues
        ) from None
    return await _write(unit, context, patched, resource_id, current, "PATCH")


async def delete_in(
    unit: UnitOfWork,
    context: WriteContext,
    current: Version | None,
    preconditions: Preconditions,
) -> Version | None:
    if current is not None:
        require(context.access, Interaction.DELETE, current.resource_type)
        if hidden(context.access, Interaction.DELETE, current):
            raise NotFound(f"{current.resource_type}/{current.id} is not known")
    check_preconditions(current, preconditions)
    return await _tombstone(unit, context, current)


async def match_one(
    unit: UnitOfWork, context: WriteContext, resource_type: str, criteria: Params, action: str
) -> Version | None:
    """The one resource the criteria of a conditional `action` match, among those the
    writer may `action` (so a match cannot tell of resources outside its access)."""
    query = parse_criteria(resource_type, criteria, context.known())
    if not unrestricted(context.access, _MATCHED[action], (resource_type,)):
        query = confine(query, context.access, _MATCHED[action])
    matches = await stored_matches(unit, context, query, limit=2)
    if len(matches) > 1:
        raise PreconditionFailed(
            f"Conditional {action}: the criteria match more than one {resource_type}"
        )
    return matches[0] if matches else None


async def stored_matches(
    unit: UnitOfWork,
    context: WriteContext,
    query: SearchQuery,
    limit: int,
    decides: bool = True,
) -> list[Version]:
    """Up to `limit` stored resources `query` matches. Where index values may have been
    cut (search/confirm.py) the store's candidates are confirmed on each resource, off
    the event loop when their bodies are large; when more candidates share the cut
    prefix than can be confirmed, the answer would be a guess, so it is refused."""
    if not needs_confirmation(query):
        return await unit.match(query, limit=limit, decides=decides)
    candidates = await unit.match(query, limit=CONFIRM_AT_MOST, decides=decides)
    known = portable(context.known() or registry())
    cost = sum(len(version.body or b"") for version in candidates)
    held = await context.work(holding, query, candidates, known, cost=cost)
    if len(candidates) == CONFIRM_AT_MOST and len(held) < limit:
        raise TooCostly(
            f"More than {CONFIRM_AT_MOST} resources share the first {INDEX_CUT} characters"
            " of the criteria's values; they cannot all be compared whole"
        )
    return held[:limit]


async def _write(
    unit: UnitOfWork,
    context: WriteContext,
    resource: JSONObject,
    resource_id: str,
    current: Version | None,
    method: str,
    index: tuple[IndexEntry, ...] | None = None,
) -> WriteResult:
    require_write(context.access, method, current, resource)
    number = current.version + 1 if current is not None else 1
    moment = context.clock()
    rule = context.rule_for(str(resource["resourceType"]))
    if rule is not None:
        # The rule sees the resource as it will be stored: under its id.
        new = {**resource, "id": resource_id}
        amended = await rule(
            Change(unit, _content(current), new, context.actor, moment, context.access)
        )
        if amended is not None:
            resource, index = amended, None
    stored = meta.stamp(resource, resource_id, number, moment)
    body = codec.dumps(stored)
    version = Version(stored["resourceType"], resource_id, number, moment, method, body)
    if index is None:
        # Index entries depend on neither id, version nor lastUpdated: those are columns.
        known = portable(context.known() or registry())
        index = await context.work(index_entries, stored, known, cost=len(body))
    await unit.write(version, index)
    return WriteResult(version, created=current is None or current.deleted)


async def _tombstone(
    unit: UnitOfWork, context: WriteContext, current: Version | None
) -> Version | None:
    if current is None or current.deleted:
        return None
    require_write(context.access, "DELETE", current, None)
    moment = context.clock()
    rule = context.rule_for(current.resource_type)
    if rule is not None:
        await rule(Change(unit, _content(current), None, context.actor, moment, context.access))
    tombstone = Version(
        current.resource_type, current.id, current.version + 1, moment, "DELETE", None
    )
    await unit.write(tombstone, ())
    return tombstone


def _checked(
    resource: JSONObject | CheckedResource, resource_type: str
) -> tuple[JSONObject, tuple[IndexEntry, ...] | None]:
    """The resource, validated (here unless it was already), and its index entries if
    they were worked out with the validation."""
    if isinstance(resource, CheckedResource):
        return resource.resource, resource.index
    validate(resource, resource_type)
    return resource, None


def _refuse_hidden(
    context: WriteContext, interaction: Interaction, current: Version | None
) -> None:
    """An update over a resource the token may not write is refused (403) before any
    precondition is checked, so no version number or content is told."""
    if hidden(context.access, interaction, current):
        raise Forbidden(
            "The access token does not allow update on this resource: it is outside the"
            " token's patient compartment or scope restriction"
        )


def _existing(current: Version | None, resource_type: str, resource_id: str) -> Version:
    """The current version of a resource that exists: 404 if it never did, 410 if deleted."""
    if current is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    if current.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted")
    return current


def _content(version: Version | None) -> JSONObject | None:
    if version is None or version.body is None:
        return None
    return codec.load_object(version.body)
