"""Whether a resource version belongs in an export (Bulk Data IG 2.0.0 export.html
"Query Parameters"): its type is exported, it changed after `_since` and before
`_until`, it lies in a chosen patient's compartment (Patient and Group level), the
kick-off's access may read it, and it meets one of its type's `_typeFilter`s.

The one test both the type phases (export_job.py) and the associated-data phase
(export_associated.py: is a Provenance's target something the export returned?) use.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fhirserver.auth.compartment import patient_ids
from fhirserver.auth.confine import unrestricted, visible
from fhirserver.auth.scopes import Interaction
from fhirserver.bulk.export_request import SYSTEM, ExportRequest
from fhirserver.search.match import matches
from fhirserver.search.query import SearchQuery

Select = Callable[[dict[str, Any]], bool]


def selector(request: ExportRequest, resource_type: str) -> Select:
    """Whether a resource of this type belongs in the export, by its content: in a
    chosen patient's compartment (Patient and Group level), readable under the
    kick-off's access, and meeting one of the type's `_typeFilter`s."""
    access = request.access()
    everything = unrestricted(access, Interaction.SEARCH, (resource_type,))
    query: SearchQuery | None = request.filters().get(resource_type)
    patients = None if request.patients is None else frozenset(request.patients)

    def select(resource: dict[str, Any]) -> bool:
        if request.level != SYSTEM:
            members = patient_ids(resource)
            if not (members & patients if patients is not None else members):
                return False
        if not everything and not visible(access, Interaction.SEARCH, resource):
            return False
        return query is None or matches(query, resource)

    return select


def in_window(request: ExportRequest, last_updated: datetime) -> bool:
    """export.html `_since` (changed after the instant: strictly later) and `_until`
    (changed before it: `meta.lastUpdated` earlier than the instant)."""
    if request.since is not None and last_updated <= request.since:
        return False
    return request.until is None or last_updated < request.until
