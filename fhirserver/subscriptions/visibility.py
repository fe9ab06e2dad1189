"""Notifications never show what the subscriber could not read (DESIGN.md
"Authorization"; issue 15 "Safety").

A client's write of a Subscription records who wrote it: the token's client id,
scopes, fhirUser and patient context go into the server-owned extension OWNER on the
resource (whatever a client sends there is replaced; with authorization off, when the
writer may do everything, there is none). Before an event is recorded, the matcher asks
the one policy (`interactions/guard.py shows`) whether that owner may read the
version; if not, there is no event, so neither a channel nor `$events` nor a websocket
replay can show it. The extension is readable by whoever may read the Subscription: it
holds no secret (the token itself never gets this far).

On update the owner is replaced only by the same client and user; another writer (an
administrator fixing `reason`, turning it on again) leaves the stored owner, so an edit
never widens what a restricted client's endpoint receives. Only when another writer
changes where or what it sends (the channel's type or endpoint, or the criteria) does
that writer become the owner: it chose the recipient, which then gets no more than a
subscription of its own would.
"""

from __future__ import annotations

from typing import Any

from fhirserver.auth.access import Access
from fhirserver.auth.scopes import Interaction, parse_scopes
from fhirserver.interactions.guard import shows
from fhirserver.storage.base import Version

OWNER = "http://fhirserver.dev/fhir/StructureDefinition/subscription-owner"
_PARTS = ("client", "scopes", "user", "patient")


def with_owner(resource: dict[str, Any], access: Access) -> dict[str, Any]:
    """The resource with OWNER set to `access` (left out for everything)."""
    extensions = [e for e in resource.get("extension", []) if e.get("url") != OWNER]
    if access != Access.everything():
        values = {
            "client": access.client_id,
            "scopes": str(access.scopes),
            "user": access.user,
            "patient": access.patient,
        }
        parts = [{"url": k, "valueString": v} for k, v in values.items() if v]
        extensions.append({"url": OWNER, "extension": parts})
    amended = {k: v for k, v in resource.items() if k != "extension"}
    if extensions:
        amended["extension"] = extensions
    return amended


def _same_writer(owner: Access, writer: Access) -> bool:
    return (owner.client_id, owner.user) == (writer.client_id, writer.user)


def _destination(resource: dict[str, Any]) -> tuple[Any, ...]:
    channel = resource.get("channel") or {}
    return channel.get("type"), channel.get("endpoint"), resource.get("criteria")


def owner_after(
    current: dict[str, Any] | None, new: dict[str, Any], writer: Access
) -> dict[str, Any]:
    """`new` with OWNER as it stands after `writer` writes it over `current` (see above)."""
    if current is not None and _destination(current) == _destination(new):
        owner = owner_of(current)
        if not _same_writer(owner, writer):
            return with_owner(new, owner)
    return with_owner(new, writer)


def owner_of(resource: dict[str, Any]) -> Access:
    """Who the subscription notifies on behalf of (everything when none is recorded)."""
    for extension in resource.get("extension", []):
        if extension.get("url") == OWNER:
            values = {
                p.get("url"): p.get("valueString")
                for p in extension.get("extension", [])
                if p.get("url") in _PARTS
            }
            return Access(
                client_id=values.get("client"),
                scopes=parse_scopes(values.get("scopes") or ""),
                user=values.get("user"),
                patient=values.get("patient"),
            )
    return Access.everything()


def visible_to_subscriber(subscription: dict[str, Any], version: Version) -> bool:
    """Whether the subscription's owner may read `version` (an event is recorded only if so)."""
    return shows(owner_of(subscription), Interaction.READ, version)
