"""Signed notifications (README "Subscriptions"): a client that wants to verify that a
rest-hook notification comes from this server registers a secret as the
`channel.header` `X-Subscription-Secret: <secret>`. The server takes that header out
of the resource before it is stored (so reads, searches, history, exports and logs
never show it), keeps the secret beside it, and marks the channel with the extension
SIGNED (valueBoolean true). Every notification then carries
`X-Signature: sha256=<hex HMAC-SHA256 of the exact request body under the secret>`
(an empty body for an empty POST). Sending the header again replaces the secret;
removing the extension stops the signing.

The secret reaches the record through a job (the write's unit of work can only record
jobs besides resources): the job runs at once and the secret leaves the jobs table with
it. A delivery that finds the channel marked but the secret not yet in place waits.
The record is the subscription incarnation's (model.py `records_key`): one created again
under the same id never signs with the old secret, which a delete's job removes.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

import orjson

from fhirserver.storage.base import Job, Store
from fhirserver.subscriptions.model import records_key
from fhirserver.worker import Handler

SIGNED = "http://fhirserver.dev/fhir/StructureDefinition/subscription-signed"
SECRET_HEADER = "x-subscription-secret"
SIGNATURE_HEADER = "X-Signature"
# The job that carries a new secret to its record (or, without one, removes it), and the
# record; both keyed by the subscription's records key.
SECRET_JOB = "subscription.secret"
SECRET_RECORD = "subscription.secret"


def take_secret(resource: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The resource without its secret header (marked signed if it had one), and the secret."""
    channel = resource.get("channel")
    if not isinstance(channel, dict):
        return resource, None
    headers = [h for h in channel.get("header", []) if isinstance(h, str)]
    secret = None
    kept = []
    for header in headers:
        name, colon, value = header.partition(":")
        if colon and name.strip().lower() == SECRET_HEADER:
            secret = value.strip()
        else:
            kept.append(header)
    if secret is None:
        return resource, None
    amended_channel = {k: v for k, v in channel.items() if k != "header"}
    if kept:
        amended_channel["header"] = kept
    extensions = [e for e in channel.get("extension", []) if e.get("url") != SIGNED]
    amended_channel["extension"] = [*extensions, {"url": SIGNED, "valueBoolean": True}]
    return {**resource, "channel": amended_channel}, secret


def is_signed(resource: dict[str, Any]) -> bool:
    channel = resource.get("channel") or {}
    return any(
        e.get("url") == SIGNED and e.get("valueBoolean") is True
        for e in channel.get("extension", [])
        if isinstance(e, dict)
    )


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def secret_job(key: str, secret: str | None, now: datetime) -> Job:
    """The job that keeps `secret` for the subscription whose records key is `key`;
    with None, that forgets it (the subscription is deleted)."""
    return Job(SECRET_JOB, key, now, orjson.dumps({"secret": secret}))


async def secret_for(store: Store, resource: dict[str, Any], now: datetime) -> str | None:
    found = await store.get_record(SECRET_RECORD, records_key(resource), now)
    return str(found["secret"]) if found else None


def secret_handler(store: Store) -> Handler:
    async def keep(job: Job) -> None:
        secret = orjson.loads(job.payload).get("secret")
        if isinstance(secret, str):
            await store.put_record(SECRET_RECORD, job.key, {"secret": secret}, None)
        else:
            await store.delete_record(SECRET_RECORD, job.key)

    return keep
