"""SMART scopes as values (App Launch 2.2.0, scopes-and-launch-context.html).

A scope string is a space-separated list (RFC 6749 section 3.3). Each item is one of:

- a resource scope, `context/Type.permissions[?param=value&...]` ("Clinical Scope
  Syntax"): context `patient`, `user` or `system`; Type a FHIR resource type or `*`
  (every type, now and later: "Wildcard scopes"); permissions either v2 letters, a
  non-empty subset of `cruds` in that order, or v1 `read`, `write` or `*`;
- a launch or identity scope: `openid`, `fhirUser`, `launch`, `launch/patient`,
  `launch/encounter`, `offline_access`, `online_access`;
- anything else. "Scope requests with undefined or out of order interactions MAY be
  ignored, replaced with server default scopes, or rejected": this server ignores them,
  and keeps them in `Scopes.ignored` so that an approval screen or a token response can
  say what was dropped.

v1 scopes mean what SMART 2.2 says a v2 server SHOULD read them as ("Scopes for
requesting clinical data"): v1 `.read` is v2 `.rs`, v1 `.write` is v2 `.cud`, v1 `.*`
is v2 `.cruds`. A parsed v1 scope equals its v2 form; it keeps its own text so that a
server can "return v1 scopes when v1 scopes are requested and granted".

Several scopes grant the union of what each grants ("Scope Equivalence":
`Observation.rs` is interchangeable with `Observation.r Observation.s`). A granular
restriction ("Finer-grained resource constraints using search parameters") narrows
only its own scope: what `patient/Observation.rs?category=laboratory` adds to a token
is laboratory Observations, and a second, unrestricted Observation scope adds the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from urllib.parse import quote, unquote

from fhirserver.resources.definitions import is_resource_type


class Context(StrEnum):
    """Whose data a resource scope reaches ("Patient-specific", "User-level",
    "System-level scopes")."""

    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


class Interaction(StrEnum):
    """The five v2 permissions, in the order their letters must appear.

    `read` covers read, vread and instance history; `search` covers type and system
    search and history; `update` covers patch and update-as-create (SMART 2.2).
    """

    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    SEARCH = "search"

    @property
    def letter(self) -> str:
        return self.value[0]


ALL_INTERACTIONS = frozenset(Interaction)
WILDCARD = "*"

# v1 permission -> the v2 interactions SMART 2.2 maps it to.
_V1 = {
    "read": frozenset({Interaction.READ, Interaction.SEARCH}),
    "write": frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE}),
    "*": ALL_INTERACTIONS,
}
_BY_LETTER = {interaction.letter: interaction for interaction in Interaction}
# Non-empty is checked separately: the pattern alone matches "".
_V2_LETTERS = re.compile(r"c?r?u?d?s?")
_RESOURCE_SCOPE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>[A-Za-z]+|\*)\.(?P<permissions>[a-z]+|\*)"
    r"(?:\?(?P<query>.*))?"
)
# A search parameter name, with the modifiers and chains SMART calls experimental.
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.:]*")

# The launch and identity scopes this server knows, in the order they are written out.
OPENID = "openid"
FHIR_USER = "fhirUser"
LAUNCH = "launch"
LAUNCH_PATIENT = "launch/patient"
LAUNCH_ENCOUNTER = "launch/encounter"
OFFLINE_ACCESS = "offline_access"
ONLINE_ACCESS = "online_access"
FLAGS = (OPENID, FHIR_USER, LAUNCH, LAUNCH_PATIENT, LAUNCH_ENCOUNTER, OFFLINE_ACCESS, ONLINE_ACCESS)

# (search parameter, value) pairs, all of which a resource must match: sorted and
# without repeats, so that equal restrictions compare equal.
Restriction = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Permission:
    """One resource scope: `interactions` on `resource_type` (or every type, `*`) in
    `context`, limited to resources that match every pair of `restriction` (none: no
    limit)."""

    context: Context
    resource_type: str
    interactions: frozenset[Interaction]
    restriction: Restriction = ()
    # The scope as the client wrote it (v1 stays v1); "" for one this server made up.
    text: str = field(default="", compare=False)

    def grants(self, interaction: Interaction, resource_type: str) -> bool:
        return interaction in self.interactions and self.resource_type in (
            WILDCARD,
            resource_type,
        )

    def __str__(self) -> str:
        return self.text or self.v2()

    def v2(self) -> str:
        """The scope in v2 syntax, shortest form."""
        letters = "".join(i.letter for i in Interaction if i in self.interactions)
        query = "&".join(f"{name}={quote(value, safe=':/|,')}" for name, value in self.restriction)
        return f"{self.context}/{self.resource_type}.{letters}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Scopes:
    """A parsed scope string: resource permissions, launch and identity flags, and
    the items ignored as unknown or malformed."""

    permissions: tuple[Permission, ...] = ()
    flags: frozenset[str] = frozenset()
    ignored: tuple[str, ...] = ()

    def __str__(self) -> str:
        """The granted scopes as a scope string (ignored items left out)."""
        items = [str(p) for p in self.permissions]
        items += [flag for flag in FLAGS if flag in self.flags]
        return " ".join(items)

    @property
    def openid(self) -> bool:
        return OPENID in self.flags

    @property
    def fhir_user(self) -> bool:
        return FHIR_USER in self.flags

    @property
    def launch(self) -> bool:
        return LAUNCH in self.flags

    @property
    def launch_patient(self) -> bool:
        return LAUNCH_PATIENT in self.flags

    @property
    def launch_encounter(self) -> bool:
        return LAUNCH_ENCOUNTER in self.flags

    @property
    def offline_access(self) -> bool:
        return OFFLINE_ACCESS in self.flags

    @property
    def online_access(self) -> bool:
        return ONLINE_ACCESS in self.flags


def parse_scopes(text: str) -> Scopes:
    """Every item of a space-separated scope string, unknown ones kept aside."""
    permissions: list[Permission] = []
    flags: set[str] = set()
    ignored: list[str] = []
    for item in text.split():
        if item in FLAGS:
            flags.add(item)
        elif (permission := parse_permission(item)) is not None:
            if permission not in permissions:
                permissions.append(permission)
        elif item not in ignored:
            ignored.append(item)
    return Scopes(tuple(permissions), frozenset(flags), tuple(ignored))


def parse_permission(item: str) -> Permission | None:
    """One resource scope, or None when it is not one this server understands."""
    found = _RESOURCE_SCOPE.fullmatch(item)
    if found is None:
        return None
    resource_type = found["type"]
    if resource_type != WILDCARD and not is_resource_type(resource_type):
        return None
    interactions = _interactions(found["permissions"])
    if interactions is None:
        return None
    restriction: Restriction = ()
    if found["query"] is not None:
        # Restrictions are v2 syntax; on a v1 scope they have no defined meaning.
        if found["permissions"] in _V1:
            return None
        parsed = _restriction(found["query"])
        if parsed is None:
            return None
        restriction = parsed
    return Permission(Context(found["context"]), resource_type, interactions, restriction, item)


def _interactions(permissions: str) -> frozenset[Interaction] | None:
    if permissions in _V1:
        return _V1[permissions]
    if not permissions or not _V2_LETTERS.fullmatch(permissions):
        # Out of order (".dus") or unknown letters: SMART warns that guessing here
        # (".read" as ".rd") grants what nobody asked for.
        return None
    return frozenset(_BY_LETTER[letter] for letter in permissions)


def _restriction(query: str) -> Restriction | None:
    """`param=value&...`. A malformed one drops the whole scope rather than the
    restriction: dropping the restriction would grant more than was asked."""
    pairs: set[tuple[str, str]] = set()
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if not equals or not value or not _PARAM_NAME.fullmatch(name):
            return None
        pairs.add((name, unquote(value)))
    return tuple(sorted(pairs))


def granting(
    scopes: Scopes, interaction: Interaction, resource_type: str
) -> tuple[Permission, ...]:
    """The permissions that grant `interaction` on `resource_type`, in any context."""
    return tuple(p for p in scopes.permissions if p.grants(interaction, resource_type))


def allows(scopes: Scopes, interaction: Interaction, resource_type: str) -> bool:
    """Whether any scope grants `interaction` on `resource_type` (launch context aside:
    `fhirserver.auth.policy` decides for a whole `Access`)."""
    return bool(granting(scopes, interaction, resource_type))


def restrictions(
    scopes: Scopes, interaction: Interaction, resource_type: str
) -> tuple[Restriction, ...]:
    """The alternatives under which the scopes grant `interaction` on `resource_type`:
    a resource qualifies when it matches any one of them. `()` (not granted) is no
    alternative at all; an empty restriction among them means unrestricted, and then
    it is the only one returned."""
    found: list[Restriction] = []
    for permission in granting(scopes, interaction, resource_type):
        if not permission.restriction:
            return ((),)
        if permission.restriction not in found:
            found.append(permission.restriction)
    return tuple(found)


def narrow(granted: Scopes, requested: Scopes) -> Scopes:
    """What may be approved of `requested` within `granted` (what a client is
    registered for, or what a user left ticked on the approval screen).

    Each requested scope is kept as written when one granted scope covers it (so v1
    stays v1), else cut down to its overlap with each granted scope: the narrower
    type, the common interactions, both restrictions at once. Flags are kept when
    both sides have them; the request's ignored items are still reported.
    """
    permissions: list[Permission] = []
    for wanted in requested.permissions:
        overlaps = [o for have in granted.permissions if (o := _overlap(wanted, have)) is not None]
        kept = [wanted] if wanted in overlaps else overlaps
        permissions += [p for p in kept if p not in permissions]
    return Scopes(tuple(permissions), requested.flags & granted.flags, requested.ignored)


def _overlap(a: Permission, b: Permission) -> Permission | None:
    """What both permissions grant, or None when that is nothing."""
    if a.context != b.context:
        return None
    if a.resource_type == WILDCARD:
        resource_type = b.resource_type
    elif b.resource_type in (WILDCARD, a.resource_type):
        resource_type = a.resource_type
    else:
        return None
    interactions = a.interactions & b.interactions
    if not interactions:
        return None
    # Matching both restrictions is matching all of their pairs.
    restriction = tuple(sorted(set(a.restriction) | set(b.restriction)))
    return replace(
        a, resource_type=resource_type, interactions=interactions, restriction=restriction, text=""
    )
