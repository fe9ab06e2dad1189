"""EHR launch (SMART App Launch 2.2 app-launch.html "Launch App: EHR Launch"): an EHR
that embeds an app asks this server for an opaque `launch` value standing for the
patient (and encounter) open in the EHR, and opens the app with it; the app passes it
back in its authorization request, which then binds that context without a picker.

Only someone who may open any patient's record may mint one: a practitioner user or a
backend service (a system client). The value is random, short-lived and stored only as
its hash (`registry.save_launch`).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from fhirserver.auth.access import Access
from fhirserver.auth.authorize import PICKING_USERS
from fhirserver.auth.registry import LaunchContext, save_launch
from fhirserver.auth.scopes import Context
from fhirserver.errors import BadRequest, FHIRError
from fhirserver.resources import codec
from fhirserver.resources.meta import check_id
from fhirserver.resources.references import local_reference
from fhirserver.storage.base import Store


class LaunchForbidden(FHIRError):
    """The token holds, but its holder may not launch apps for patients."""

    status, code = 403, "forbidden"


def may_launch(access: Access) -> bool:
    """A practitioner user, or a system client (a backend service: no user, `system/`
    scopes)."""
    user_type = (access.user or "").partition("/")[0]
    if access.user is not None:
        return user_type in PICKING_USERS
    return any(p.context == Context.SYSTEM for p in access.scopes.permissions)


async def create_launch(
    store: Store,
    access: Access,
    patient: str,
    encounter: str | None,
    now: datetime,
    lifetime: timedelta,
) -> str:
    """A new `launch` value for `patient` (an id; `Patient/id` also accepted) and
    optionally one of their encounters, both of which must exist here; it expires after
    `lifetime` (the server's `launch_lifetime`: the EHR opens the app right away)."""
    if not may_launch(access):
        raise LaunchForbidden("Only a practitioner or a system client may launch apps")
    patient_id = check_id(patient.removeprefix("Patient/"))
    found = await store.read("Patient", patient_id)
    if found is None or found.body is None:
        raise BadRequest(f"No Patient/{patient_id} here")
    encounter_id = None
    if encounter is not None:
        encounter_id = check_id(encounter.removeprefix("Encounter/"))
        version = await store.read("Encounter", encounter_id)
        subject = None
        if version is not None and version.body is not None:
            subject = local_reference(codec.load_object(version.body).get("subject"))
        if subject != f"Patient/{patient_id}":
            raise BadRequest(f"No Encounter/{encounter_id} of Patient/{patient_id} here")
    launch = secrets.token_urlsafe(32)
    created_by = access.user or access.client_id
    context = LaunchContext(patient=patient_id, encounter=encounter_id, created_by=created_by)
    await save_launch(store, launch, context, now + lifetime)
    return launch
