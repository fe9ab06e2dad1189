"""Topic discovery: the shipped SubscriptionTopics (Basic resources in extensions/) are
written into the store so that clients find them the way the Backport IG says an R4
server offers them (Backport IG 1.1.0 "Subscription Topics in R4" and the
backport-subscription-server-r4 CapabilityStatement: servers SHOULD support `Basic` read
and search by `code` for topics), e.g.
`GET [base]/Basic?code=http://hl7.org/fhir/fhir-types|SubscriptionTopic`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fhirserver.conformance import load_resources
from fhirserver.errors import FHIRError
from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources import codec
from fhirserver.storage.base import Store, VersionConflict

logger = logging.getLogger("fhirserver")

_TOPIC_URL_SUFFIX = "/StructureDefinition/extension-SubscriptionTopic.url"


def shipped_topic_resources() -> list[dict[str, Any]]:
    """The Basic-wrapped SubscriptionTopics in extensions/."""
    return [
        resource
        for resource in load_resources("extensions")
        if resource.get("resourceType") == "Basic"
        and any(
            str(ext.get("url", "")).endswith(_TOPIC_URL_SUFFIX)
            for ext in resource.get("extension", ())
        )
    ]


def _content(resource: Mapping[str, Any]) -> dict[str, Any]:
    # The server owns meta (versionId, lastUpdated); the rest is the topic.
    return {key: value for key, value in resource.items() if key != "meta"}


async def publish_topics(
    store: Store, writes: WriteContext, topics: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Write each topic (a PUT with its own id) unless the store already holds the
    same content: idempotent, so every start-up of every process may call it. Returns
    the `Basic/[id]`s written."""
    written = []
    server = writes.as_server()
    for topic in topics:
        resource_id = str(topic["id"])
        current = await store.read("Basic", resource_id)
        stored = None if current is None or current.body is None else current.body
        if stored is not None and _content(codec.load_object(stored)) == _content(topic):
            continue
        await crud.update(store, server, "Basic", resource_id, _content(topic))
        written.append(f"Basic/{resource_id}")
    return written


async def publish_on_start(store: Store, writes: WriteContext) -> None:
    """At start-up: publish the shipped topics. A store that takes no writes (a
    standalone MongoDB, which still serves reads) only loses topic discovery, and of
    two processes starting at once on one store the slower one's write may conflict
    with the faster one's: the topics are there either way, so neither stops starting."""
    try:
        await publish_topics(store, writes, shipped_topic_resources())
    except (FHIRError, VersionConflict) as exc:
        logger.warning("the subscription topics were not written to the store: %s", exc)
