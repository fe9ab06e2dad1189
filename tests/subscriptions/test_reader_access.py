"""Who a topic subscription's notifications are shown to, and on whose behalf
(Subscriptions Backport IG 1.1.0 "Payloads": additional-context; OperationDefinition
backport-subscription-events `$events`; R4 subscription.html "Security": a server
"SHALL NOT" send what the subscriber may not see; DESIGN.md "Authorization").

- `$events` (and the websocket channel, through the same `notification()`) shows
  additional-context only when both the owner and the reader may read it.
- An update by a different client/user keeps the stored owner: an administrator's edit
  does not widen a restricted client's subscription.
"""

from __future__ import annotations

from typing import Any

from tests.rest.token_apps import ADMIN, bearer
from tests.subscriptions.conftest import topic_subscription
from tests.subscriptions.test_additional_context import (
    BOOKED,
    NO_PATIENTS,
    Server,
    _notified,
    server,
)

__all__ = ["server"]


def _patients(bundles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for b in bundles
        for e in b.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "Patient"
    ]


async def test_events_context_is_what_the_reader_may_read(server: Server) -> None:
    # The admin's subscription (owner: everything), full-resource, appointment-booked.
    bundle = await _notified(server, "full-resource", token="admin")
    patient_id = bundle["test"]["patient"]["id"]
    reference = bundle["entry"][0]["resource"]["parameter"][0]["valueReference"]["reference"]
    subscription_id = reference.rsplit("/", 1)[-1]
    direct = await server.http.get(f"/Patient/{patient_id}", headers=bearer(NO_PATIENTS))
    assert direct.status_code in (403, 404)
    r = await server.http.get(
        f"/Subscription/{subscription_id}/$events", headers=bearer(NO_PATIENTS)
    )
    assert r.status_code == 200, r.text
    assert not _patients([r.json()])
    # The owner still sees it.
    r = await server.http.get(f"/Subscription/{subscription_id}/$events", headers=bearer(ADMIN))
    assert _patients([r.json()])


async def _book(server: Server) -> None:
    patient = await server.create({"resourceType": "Patient", "name": [{"family": "Ng"}]})
    appointment = {
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2031-03-02T10:00:00Z",
        "end": "2031-03-02T10:30:00Z",
        "participant": [{"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"}],
    }
    await server.create(appointment)
    await server.run_jobs()


async def test_admin_edit_keeps_the_restricted_owner(server: Server) -> None:
    subscription = topic_subscription(server.receiver.url, content="full-resource")
    subscription["criteria"] = BOOKED
    created = await server.create(subscription, NO_PATIENTS)
    await server.run_jobs()
    path = f"/Subscription/{created['id']}"
    current = (await server.http.get(path, headers=bearer(ADMIN))).json()
    r = await server.http.put(path, json={**current, "reason": "front desk"}, headers=bearer(ADMIN))
    assert r.status_code == 200, r.text
    await server.run_jobs()
    n = len(server.receiver.received)
    await _book(server)
    later = [r.json() for r in server.receiver.received[n:]]
    assert later, "no notification after the edit"
    assert not _patients(later), "the restricted client's endpoint receives Patients"
