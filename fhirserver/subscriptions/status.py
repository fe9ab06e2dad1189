"""A Subscription as the engine reads it, and the status changes the server makes on
its own account (R4 subscription.html "status": `active` once accepted, `error` when
delivery keeps failing, `off` past `end`)."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from fhirserver.errors import FHIRError
from fhirserver.interactions import crud
from fhirserver.storage.base import Store
from fhirserver.subscriptions.context import SubscriptionContext

logger = logging.getLogger("fhirserver.subscriptions")


async def current_subscription(store: Store, subscription_id: str) -> dict[str, Any] | None:
    found = await store.read("Subscription", subscription_id)
    if found is None or found.body is None:
        return None
    body: dict[str, Any] = orjson.loads(found.body)
    return body


async def set_status(
    context: SubscriptionContext, resource: dict[str, Any], status: str, error: str | None
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
    try:
        await crud.update(
            context.store, context.writes.as_server(), "Subscription", str(resource["id"]), amended
        )
    except FHIRError:
        logger.warning("could not set Subscription/%s %s", resource.get("id"), status)
