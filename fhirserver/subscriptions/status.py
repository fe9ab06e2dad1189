"""A Subscription as the engine reads it, and the status changes the server makes on
its own account (R4 subscription.html "status": `active` once accepted, `error` when
delivery keeps failing, `off` past `end`)."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from fhirserver.errors import FHIRError, PreconditionFailed
from fhirserver.interactions import crud
from fhirserver.interactions.preconditions import Preconditions
from fhirserver.storage.base import Store
from fhirserver.subscriptions.context import SubscriptionContext

logger = logging.getLogger("fhirserver.subscriptions")


async def current_subscription(store: Store, subscription_id: str) -> dict[str, Any] | None:
    found = await store.read("Subscription", subscription_id)
    if found is None or found.body is None:
        return None
    body: dict[str, Any] = orjson.loads(found.body)
    return body


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def _version(resource: dict[str, Any]) -> int | None:
    version = str(resource.get("meta", {}).get("versionId", ""))
    return int(version) if version.isascii() and version.isdigit() else None


async def set_status(
    context: SubscriptionContext, resource: dict[str, Any], status: str, error: str | None
) -> None:
    """`status` (and `error`) on the subscription as read in `resource`: an update of
    that version only (If-Match, R4 http.html#concurrency). When a client wrote or
    deleted it since, the decision was made on what is no longer there: re-read; unless
    only the version moved (the content is what was decided on), leave it: a deleted
    subscription is never re-created, a client's write is never overwritten, and the
    job that decided re-decides on its next run from the current resource."""
    decided_on = _content(resource)
    for _ in range(3):
        version = _version(resource)
        if version is None:
            break
        try:
            await _write_status(context, resource, version, status, error)
            return
        except PreconditionFailed:
            current = await current_subscription(context.store, str(resource["id"]))
            if current is None or _content(current) != decided_on:
                return
            resource = current
        except FHIRError:
            break
    logger.warning("could not set Subscription/%s %s", resource.get("id"), status)


async def _write_status(
    context: SubscriptionContext,
    resource: dict[str, Any],
    version: int,
    status: str,
    error: str | None,
) -> None:
    amended = {k: v for k, v in resource.items() if k != "error"}
    # The profile stays (it makes `criteria` a topic); the server stamps the rest.
    meta = {k: v for k, v in resource.get("meta", {}).items() if k == "profile"}
    amended.pop("meta", None)
    if meta:
        amended["meta"] = meta
    amended["status"] = status
    if error:
        amended["error"] = error
    await crud.update(
        context.store,
        context.writes.as_server(),
        "Subscription",
        str(resource["id"]),
        amended,
        Preconditions(if_match=frozenset({version})),
    )
