"""Rules a write must meet beyond validation, owned by the features that need them
(telehealth's Appointment and Encounter lifecycle).

A rule runs inside the write's unit of work, for every create, update, patch and
delete of its resource type, from REST and from Bundles alike. It sees the current
content (None if there is none) and the new one (None for a delete); it may refuse
with a FHIRError (nothing is written), return amended content, and record jobs in the
unit, so that the intent of a side effect commits with the state change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import UnitOfWork

WriteRule = Callable[
    [UnitOfWork, JSONObject | None, JSONObject | None], Awaitable[JSONObject | None]
]

_rules: dict[str, WriteRule] = {}


def install(rules: Mapping[str, WriteRule]) -> None:
    """Make these the rules, by resource type (the app does this at start-up)."""
    _rules.clear()
    _rules.update(rules)


def rule_for(resource_type: str) -> WriteRule | None:
    return _rules.get(resource_type)
