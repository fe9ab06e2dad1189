"""Rules a write must meet beyond validation, owned by the features that need them
(telehealth's Appointment and Encounter lifecycle), and the context every write runs in.

A rule runs inside the write's unit of work, for every create, update, patch and
delete of its resource type, from REST and from Bundles alike. It sees a `Change`: the
current content (None if there is none), the new one (None for a delete), who writes
and when. It may refuse with a FHIRError (nothing is written), return amended content,
and record jobs in the unit, so that the intent of a side effect commits with the state
change (DESIGN.md "Side effects and external calls").

Nothing here is global: the app builds one `WriteContext` with its rules and clock and
passes it to every write, so two apps in one process keep their own rules.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

from fhirserver.auth.access import Access
from fhirserver.clock import Clock, system_clock
from fhirserver.cpu import CpuPool, work
from fhirserver.resources.codec import JSONObject
from fhirserver.search.params import Registry, SearchParameters
from fhirserver.storage.base import UnitOfWork

T = TypeVar("T")


class Actor(enum.Enum):
    """Who writes: a client through the API, or the server itself (a job acting on a
    side effect), which may set what clients may not, such as a visit's room."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Change:
    """One write as a rule sees it, inside its unit of work."""

    unit: UnitOfWork
    current: JSONObject | None
    new: JSONObject | None
    actor: Actor
    now: datetime
    # What the writer may do (a Subscription keeps its owner's, for delivery).
    access: Access = field(default_factory=Access.everything)


WriteRule = Callable[[Change], Awaitable[JSONObject | None]]

NO_RULES: Mapping[str, WriteRule] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WriteContext:
    """What every write needs besides its data: the rules by resource type, the clock
    (`meta.lastUpdated`, the rules' `now`), who writes, and what they may write (the
    request token's `Access`; everything when authorization is off)."""

    rules: Mapping[str, WriteRule] = field(default_factory=lambda: NO_RULES)
    clock: Clock = system_clock
    actor: Actor = Actor.CLIENT
    access: Access = field(default_factory=Access.everything)
    # The search parameters writes index with and conditional writes match by (the
    # app's, with an Implementation Guide's joined); None: the shipped ones.
    search_params: SearchParameters | None = None
    # Where a large resource's CPU-heavy steps run (worker processes); None: inline.
    cpu: CpuPool | None = None

    def known(self) -> Registry | None:
        return self.search_params.current if self.search_params is not None else None

    async def work(self, fn: Callable[..., T], *args: Any, cost: int) -> T:
        """`fn(*args)`, off the event loop when `cost` (bytes) makes it heavy."""
        return await work(self.cpu, fn, *args, cost=cost)

    def rule_for(self, resource_type: str) -> WriteRule | None:
        return self.rules.get(resource_type)

    def as_server(self) -> WriteContext:
        """The same context for a write the server makes on its own account."""
        return replace(self, actor=Actor.SERVER, access=Access.everything())

    def for_access(self, access: Access) -> WriteContext:
        """The same context for a client's write under `access`."""
        return replace(self, access=access)
