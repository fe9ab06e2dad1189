"""Profiles claimed in `meta.profile` enforced on write (FHIRSERVER_VALIDATE_PROFILES;
R4 validation.html#profile): a resource that claims a profile the server holds must
conform to it, or the write is refused (422) with the profile's issues.

A write rule (interactions/rules.py) in front of each type's own, so it runs inside
the write's unit of work for every create, update and patch, from REST and from
Bundles alike, and reads the profile in the same store. A claimed profile the server
does not hold is not enforced (data from elsewhere often claims profiles never loaded
here); one it holds but cannot use (no snapshot, not a profile) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from fhirserver.errors import Issue, Unprocessable
from fhirserver.interactions.rules import Change, WriteRule
from fhirserver.profiles.check import check_profile
from fhirserver.profiles.source import ProfileSource
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.definitions import resource_types
from fhirserver.storage.base import Reader


def profile_rules(rules: Mapping[str, WriteRule], source: ProfileSource) -> dict[str, WriteRule]:
    """Every type's rule, preceded by the check of the profiles the resource claims."""
    return {name: _checked(source, rules.get(name)) for name in resource_types()}


def _checked(source: ProfileSource, inner: WriteRule | None) -> WriteRule:
    async def rule(change: Change) -> JSONObject | None:
        if change.new is not None:
            await check_claimed(change.unit, source, change.new)
        return await inner(change) if inner is not None else None

    return rule


async def check_claimed(reader: Reader, source: ProfileSource, resource: JSONObject) -> None:
    claimed = (resource.get("meta") or {}).get("profile") or []
    errors: list[Issue] = []
    for url in dict.fromkeys(u for u in claimed if isinstance(u, str)):
        profile = await source.find(reader, url)
        if profile is not None:
            errors += [i for i in check_profile(profile, resource) if i.severity == "error"]
    if errors:
        summary = "; ".join(issue.diagnostics for issue in errors[:3])
        raise Unprocessable(
            f"The resource does not conform to its profiles: {summary}", issues=errors
        )
