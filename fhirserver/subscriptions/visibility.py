"""The hook that keeps notifications from leaking what a subscriber may not read
(DESIGN.md "Authorization"; issue 15 "Safety").

Today it lets everything through: a Subscription does not yet keep its creator's
`Access` (a client id, scopes, patient context). When it does, this is the one place
that asks the policy (`interactions/guard.py shows(access, Interaction.READ, version)`)
for every event before it is recorded, so no channel, `$events` or replay can show a
resource the subscriber could not read. With authorization off it stays "everything".
"""

from __future__ import annotations

from typing import Any

from fhirserver.storage.base import Version


def visible_to_subscriber(subscription: dict[str, Any], version: Version) -> bool:
    """Whether the subscription's owner may read `version` (an event is recorded only if so)."""
    return True
