"""What every telehealth function needs besides its request: the store, the video
provider, the app's `WriteContext` (its write rules and its one clock: DESIGN.md "Side
effects and external calls") and the visit settings (README "Telehealth"). The app builds
one `VisitContext` (`wiring.make_visit_context`) and hands it to the operations, the join
endpoint, the webhooks and the job handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fhirserver.interactions.rules import WriteContext
from fhirserver.storage.base import Store
from fhirserver.telehealth.lifecycle import DEFAULT_NO_SHOW_GRACE
from fhirserver.telehealth.providers import VideoProvider


@dataclass(frozen=True)
class VisitSettings:
    no_show_grace: timedelta = DEFAULT_NO_SHOW_GRACE
    # The join page admits from this long before the Appointment's start.
    join_early: timedelta = timedelta(minutes=15)
    token_ttl: timedelta = timedelta(minutes=10)
    require_consent: bool = False
    # Where the join page lives: the Appointment's address is `{join_base}/{code}`.
    join_base: str = "http://127.0.0.1:8080/join"


@dataclass(frozen=True)
class VisitContext:
    """`writes.clock` is the time every visit decision reads (join windows, no-shows,
    token lifetimes), the same clock the writes stamp `meta.lastUpdated` with."""

    store: Store
    provider: VideoProvider
    writes: WriteContext
    settings: VisitSettings = field(default_factory=VisitSettings)


def join_url(settings: VisitSettings, code: str) -> str:
    """The join page of a meeting code: the Appointment's `address`, the patient's link."""
    return f"{settings.join_base}/{code}"
