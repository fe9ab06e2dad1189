"""Server-assigned identity and metadata: ids, versionId, lastUpdated, instants."""

from __future__ import annotations

import os
import re
import uuid
from datetime import UTC, datetime

from fhirserver.errors import BadRequest
from fhirserver.resources.codec import JSONObject

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# ASCII digits only ("²".isdigit() is true), and few enough to fit SQLite's 64-bit integers.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")
# The low 80 bits of a version 7 UUID: 4 version bits (0111), 12 random, 2 variant bits
# (10), 62 random.
_VERSION_7 = 0x7 << 76 | 0b10 << 62
_RANDOM_BITS = (1 << 80) - 1 & ~(0xF << 76) & ~(0b11 << 62)


def new_id(now: datetime) -> str:
    """A new resource id: a version 7 UUID (RFC 9562 section 5.7), the milliseconds of
    `now` then 74 random bits. Ids made one after another sort one after another, so a
    store's B-trees keyed by id take new rows at their end rather than on a random page
    each: a create dirties a few pages instead of dozens (the index tables are keyed by
    type and id). Unguessable as a version 4 UUID is, near enough: 74 random bits."""
    millis = int(now.timestamp() * 1000) & (1 << 48) - 1
    # One read of the system's random source (each is a system call): 80 bits, of
    # which the version and variant fields take 6.
    random = int.from_bytes(os.urandom(10))
    value = millis << 80 | random & _RANDOM_BITS | _VERSION_7
    return str(uuid.UUID(int=value))


def whole_number(text: str) -> int | None:
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def check_id(resource_id: str) -> str:
    if not _ID.fullmatch(resource_id):
        raise BadRequest(f"Invalid resource id {resource_id!r}: [A-Za-z0-9-.]{{1,64}} expected")
    return resource_id


def format_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def stamp(resource: JSONObject, resource_id: str, version: int, moment: datetime) -> JSONObject:
    """The resource with its server-assigned id and meta, other content untouched.

    resourceType, id and meta lead, as the spec's JSON examples order them.
    """
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(moment)
    stamped: JSONObject = {
        "resourceType": resource["resourceType"],
        "id": resource_id,
        "meta": meta,
    }
    for key, value in resource.items():
        if key not in stamped:
            stamped[key] = value
    return stamped
