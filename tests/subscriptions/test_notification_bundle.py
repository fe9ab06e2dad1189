"""Notification Bundles as an R4 server sends them (Subscriptions R5 Backport IG 1.1.0:
"Notifications" notifications.html, "Payloads" payloads.html, the profiles
backport-subscription-notification-r4 and backport-subscription-status-r4, and the
operations backport-subscription-status ($status) and backport-subscription-events
($events)).

Each shape is built for the inputs of the IG's own R4 example instances
(BackportNotificationR4.fsh: r4-notification-handshake, -heartbeat, -empty, -id-only,
-full-resource, -multi-resource, -error, -status) and compared with them where it
matters to a subscriber, and every Bundle we build validates as R4.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from fhirserver.resources.validate import validate
from fhirserver.subscriptions.notification import (
    NOTIFICATION_PROFILE,
    STATUS_PROFILE,
    EventData,
    notification_bundle,
    status_bundle,
    status_parameters,
)

# Common.fsh / BackportNotificationR4.fsh aliases.
BASE = "https://example.org/fhir"
TOPIC = "http://hl7.org/SubscriptionTopic/admission"
SUBSCRIPTION = f"{BASE}/Subscription/admission"
STATUS_URL = f"{SUBSCRIPTION}/$status"
ENCOUNTER_ID = "86009987-eabe-42bf-8c02-b112b18cb616"
PATIENT_ID = "1599eb66-431a-447c-a3de-6897fe9ae9a1"
ENCOUNTER_URL = f"{BASE}/Encounter/{ENCOUNTER_ID}"
PATIENT_URL = f"{BASE}/Patient/{PATIENT_ID}"
IG_TIMESTAMP = "2020-05-29T11:44:13.1882432-05:00"
WHEN = datetime.fromisoformat(IG_TIMESTAMP)

ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "id": ENCOUNTER_ID,
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
    "subject": {"reference": PATIENT_URL, "display": "Example Patient"},
}
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": PATIENT_ID,
    "active": True,
    "name": [
        {"use": "usual", "text": "Example Patient", "family": "Patient", "given": ["Example"]}
    ],
}


# --- The IG's R4 example instances, transcribed from BackportNotificationR4.fsh ---------


def ig_status(status: str, kind: str, since: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    """RuleSet AddParameterStatus: the status Parameters every example starts with."""
    return {
        "resourceType": "Parameters",
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": [
            {"name": "subscription", "valueReference": {"reference": SUBSCRIPTION}},
            {"name": "topic", "valueCanonical": TOPIC},
            {"name": "status", "valueCode": status},
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": since},
            *extra,
        ],
    }


def ig_event(*references: tuple[str, str]) -> dict[str, Any]:
    """RuleSets AddParameterStatusFirstEvent(2), ...EventFocus, ...EventContext."""
    parts: list[dict[str, Any]] = [
        {"name": "event-number", "valueString": "2"},
        {"name": "timestamp", "valueInstant": IG_TIMESTAMP},
    ]
    parts += [{"name": name, "valueReference": {"reference": ref}} for name, ref in references]
    return {"name": "notification-event", "part": parts}


def ig_bundle(example_id: str, status: dict[str, Any], *more: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": example_id,
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": IG_TIMESTAMP,
        "entry": [
            {
                "fullUrl": f"urn:uuid:{example_id}",
                "resource": status,
                "request": {"method": "GET", "url": STATUS_URL},
                "response": {"status": "200"},
            },
            *more,
        ],
    }


FOCUS = ("focus", ENCOUNTER_URL)
ENCOUNTER_ENTRY = {
    "fullUrl": ENCOUNTER_URL,
    "resource": ENCOUNTER,
    "request": {"method": "POST", "url": "Encounter"},
    "response": {"status": "201"},
}
PATIENT_ENTRY = {
    "fullUrl": PATIENT_URL,
    "resource": PATIENT,
    "request": {"method": "GET", "url": f"Patient/{PATIENT_ID}"},
    "response": {"status": "200"},
}
IG_EXAMPLES: dict[str, dict[str, Any]] = {
    "handshake": ig_bundle(
        "r4-notification-handshake", ig_status("requested", "handshake", "0", [])
    ),
    "heartbeat": ig_bundle("r4-notification-heartbeat", ig_status("active", "heartbeat", "2", [])),
    "empty": ig_bundle(
        "r4-notification-empty", ig_status("active", "event-notification", "2", [ig_event()])
    ),
    "id-only": ig_bundle(
        "r4-notification-id-only",
        ig_status("active", "event-notification", "2", [ig_event(FOCUS)]),
    ),
    "full-resource": ig_bundle(
        "r4-notification-full-resource",
        ig_status("active", "event-notification", "2", [ig_event(FOCUS)]),
        ENCOUNTER_ENTRY,
    ),
    "multi-resource": ig_bundle(
        "r4-notification-multi-resource",
        ig_status(
            "active",
            "event-notification",
            "2",
            [ig_event(FOCUS, ("additional-context", PATIENT_URL))],
        ),
        ENCOUNTER_ENTRY,
        PATIENT_ENTRY,
    ),
    "error": ig_bundle(
        "r4-notification-error",
        ig_status(
            "error",
            "query-status",
            "3",
            [
                {
                    "name": "error",
                    "valueCodeableConcept": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                                "code": "no-response",
                            }
                        ]
                    },
                }
            ],
        ),
    ),
}


# --- Helpers ------------------------------------------------------------------------------


def event(
    number: int = 2,
    interaction: str = "create",
    resource: dict[str, Any] | None = ENCOUNTER,
    additional: tuple[dict[str, Any], ...] = (),
    focus_id: str = ENCOUNTER_ID,
) -> EventData:
    return EventData(
        number=number,
        timestamp=WHEN,
        focus_type="Encounter",
        focus_id=focus_id,
        interaction=interaction,
        resource=resource,
        additional=additional,
    )


def build(
    kind: str = "event-notification",
    content: str = "full-resource",
    events: tuple[EventData, ...] = (),
    status: str = "active",
    since: int = 2,
    topic: str | None = TOPIC,
    errors: tuple[Any, ...] = (),
) -> dict[str, Any]:
    bundle = notification_bundle(
        subscription_id="admission",
        topic=topic,
        status=status,
        kind=kind,
        events_since_start=since,
        events=events,
        content=content,
        base_url=BASE,
        bundle_id="b6c3a3a8-64f1-4e45-8d5b-8a8f7c0c1d2e",
        timestamp=WHEN,
        errors=errors,
    )
    assert validate(bundle) == "Bundle"  # valid R4, whatever the shape
    return bundle


def comparable(bundle: dict[str, Any]) -> dict[str, Any]:
    """What a subscriber reads: ids chosen by the sender (Bundle.id, the status entry's
    urn:uuid) aside, and instants compared as instants."""
    entries = []
    for number, entry in enumerate(bundle["entry"]):
        entry = dict(entry)
        if number == 0:
            status = dict(entry["resource"])
            status.pop("id", None)
            status["parameter"] = [_instants(p) for p in status["parameter"]]
            entry["resource"] = status
            entry.pop("fullUrl")
        entries.append(entry)
    return {
        "type": bundle["type"],
        "meta": bundle["meta"],
        "timestamp": datetime.fromisoformat(bundle["timestamp"].replace("Z", "+00:00")),
        "entry": entries,
    }


def _instants(parameter: dict[str, Any]) -> dict[str, Any]:
    if "part" not in parameter:
        return parameter
    parts = [
        {
            "name": p["name"],
            "valueInstant": datetime.fromisoformat(p["valueInstant"].replace("Z", "+00:00")),
        }
        if "valueInstant" in p
        else p
        for p in parameter["part"]
    ]
    return {**parameter, "part": parts}


def without_topic(bundle: dict[str, Any]) -> dict[str, Any]:
    status = bundle["entry"][0]["resource"]
    status["parameter"] = [p for p in status["parameter"] if p["name"] != "topic"]
    return bundle


def params(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for parameter in bundle["entry"][0]["resource"]["parameter"]:
        by_name.setdefault(parameter["name"], []).append(parameter)
    return by_name


# --- The IG's examples, rebuilt -------------------------------------------------------------


def test_the_ig_examples_are_valid_r4() -> None:
    for example in IG_EXAMPLES.values():
        assert validate(example) == "Bundle"


@pytest.mark.parametrize(
    ("example", "status", "kind", "since"),
    [("handshake", "requested", "handshake", 0), ("heartbeat", "active", "heartbeat", 2)],
)
@pytest.mark.parametrize("content", ["id-only", "full-resource"])
def test_handshake_and_heartbeat_as_the_ig_shows(
    example: str, status: str, kind: str, since: int, content: str
) -> None:
    ours = build(kind=kind, content=content, status=status, since=since)
    assert comparable(ours) == comparable(IG_EXAMPLES[example])


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_handshake_and_heartbeat_with_empty_content_leave_the_topic_out(kind: str) -> None:
    # The status profile on parameter[topic]: "SHOULD NOT be present when using `empty`
    # payloads" (the IG's own examples predate that comment and carry it).
    ours = build(kind=kind, content="empty", since=0)
    assert "topic" not in params(ours)
    assert [e["resource"]["resourceType"] for e in ours["entry"]] == ["Parameters"]


def test_empty_event_notification_as_the_ig_shows_without_topic_or_references() -> None:
    ours = build(content="empty", events=(event(additional=(PATIENT,)),))
    assert comparable(ours) == comparable(without_topic(IG_EXAMPLES["empty"]))
    # "SHALL NOT include references to resources"; no entry but the status.
    parts = params(ours)["notification-event"][0]["part"]
    assert [p["name"] for p in parts] == ["event-number", "timestamp"]
    assert len(ours["entry"]) == 1


def test_id_only_as_the_ig_shows_with_the_focus_entry_but_no_resource() -> None:
    ours = build(content="id-only", events=(event(),))
    ig = IG_EXAMPLES["id-only"]
    assert comparable(ours)["entry"][0] == comparable(ig)["entry"][0]
    # The entry the 1.1.0 example leaves out (its FSH has it commented): fullUrl and
    # request, as payloads.html requires for each id-only entry, and no resource.
    assert ours["entry"][1:] == [
        {
            "fullUrl": ENCOUNTER_URL,
            "request": {"method": "POST", "url": "Encounter"},
            "response": {"status": "201"},
        }
    ]


def test_full_resource_as_the_ig_shows() -> None:
    ours = build(content="full-resource", events=(event(),))
    assert comparable(ours) == comparable(IG_EXAMPLES["full-resource"])


def test_full_resource_with_an_included_resource_as_the_ig_multi_resource_example() -> None:
    ours = build(content="full-resource", events=(event(additional=(PATIENT,)),))
    assert comparable(ours) == comparable(IG_EXAMPLES["multi-resource"])


def test_id_only_with_an_included_resource_references_it_without_content() -> None:
    ours = build(content="id-only", events=(event(additional=(PATIENT,)),))
    parts = params(ours)["notification-event"][0]["part"]
    assert {"name": "additional-context", "valueReference": {"reference": PATIENT_URL}} in parts
    assert ours["entry"][2] == {
        "fullUrl": PATIENT_URL,
        "request": {"method": "GET", "url": f"Patient/{PATIENT_ID}"},
        "response": {"status": "200"},
    }
    assert all("resource" not in entry for entry in ours["entry"][1:])


def test_query_status_with_an_error_as_the_ig_error_example() -> None:
    no_response = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/subscription-error",
                "code": "no-response",
            }
        ]
    }
    ours = build(
        kind="query-status", content="full-resource", status="error", since=3, errors=(no_response,)
    )
    assert comparable(ours) == comparable(IG_EXAMPLES["error"])


def test_error_text_becomes_a_codeable_concept() -> None:
    ours = build(kind="heartbeat", status="error", errors=("endpoint answered 503",))
    assert params(ours)["error"] == [
        {"name": "error", "valueCodeableConcept": {"text": "endpoint answered 503"}}
    ]


# --- Shapes beyond the examples ----------------------------------------------------------------


@pytest.mark.parametrize("content", ["id-only", "full-resource"])
def test_update_and_delete_read_as_their_history_entries(content: str) -> None:
    updated = {**ENCOUNTER, "status": "finished"}
    ours = build(
        content=content,
        since=4,
        events=(event(3, "update", updated), event(4, "delete", None)),
    )
    update, delete = ours["entry"][1:]
    assert update["request"] == {"method": "PUT", "url": f"Encounter/{ENCOUNTER_ID}"}
    assert update["response"] == {"status": "200"}
    assert (update.get("resource") == updated) is (content == "full-resource")
    # A deleted focus: the reference stays (the focus SHALL be given), the entry is a
    # DELETE with no resource, as a history Bundle shows a delete.
    assert delete == {
        "fullUrl": ENCOUNTER_URL,
        "request": {"method": "DELETE", "url": f"Encounter/{ENCOUNTER_ID}"},
        "response": {"status": "204"},
    }
    events = params(ours)["notification-event"]
    assert [e["part"][0]["valueString"] for e in events] == ["3", "4"]
    assert all(
        {"name": "focus", "valueReference": {"reference": ENCOUNTER_URL}} in e["part"]
        for e in events
    )


def test_full_resource_without_the_resource_still_gives_request_and_response() -> None:
    # payloads.html: if a server cannot include the resource contents it "SHALL populate
    # the entry.request and/or entry.response elements".
    ours = build(content="full-resource", events=(event(resource=None),))
    assert ours["entry"][1] == {
        "fullUrl": ENCOUNTER_URL,
        "request": {"method": "POST", "url": "Encounter"},
        "response": {"status": "201"},
    }


def test_query_event_is_what_events_returns() -> None:
    # backport-subscription-events: "a valid notification bundle, with the first entry
    # being the subscription status information resource. The bundle type is history".
    other = "5a1d7c1e-0000-4000-8000-000000000001"
    ours = build(
        kind="query-event",
        content="full-resource",
        since=7,
        events=(
            event(5, additional=(PATIENT,)),
            event(6, "create", {**ENCOUNTER, "id": other}, (PATIENT,), focus_id=other),
        ),
    )
    assert ours["type"] == "history"
    assert params(ours)["type"] == [{"name": "type", "valueCode": "query-event"}]
    assert params(ours)["events-since-subscription-start"][0]["valueString"] == "7"
    # Both events' foci, the shared Patient once.
    assert [e["fullUrl"] for e in ours["entry"][1:]] == [
        ENCOUNTER_URL,
        PATIENT_URL,
        f"{BASE}/Encounter/{other}",
    ]


def test_query_event_with_nothing_retained_has_only_the_status() -> None:
    ours = build(kind="query-event", content="id-only", since=9)
    assert len(ours["entry"]) == 1 and "notification-event" not in params(ours)


def test_a_criteria_subscription_has_no_topic() -> None:
    ours = build(content="full-resource", events=(event(),), topic=None)
    assert "topic" not in params(ours)


def test_the_same_notification_is_the_same_document() -> None:
    # Redelivery rebuilds the Bundle: a receiver deduplicating on ids sees the same ones.
    assert build(content="id-only", events=(event(),)) == build(
        content="id-only", events=(event(),)
    )


@pytest.mark.parametrize(
    ("kind", "events", "content", "status"),
    [
        ("handshake", (event(),), "id-only", "active"),
        ("heartbeat", (event(),), "id-only", "active"),
        ("event-notification", (), "id-only", "active"),
        ("ping", (), "id-only", "active"),
        ("heartbeat", (), "everything", "active"),
        ("heartbeat", (), "id-only", "sleeping"),
        ("event-notification", (event(interaction="patch"),), "id-only", "active"),
    ],
)
def test_impossible_notifications_are_refused(
    kind: str, events: tuple[EventData, ...], content: str, status: str
) -> None:
    with pytest.raises(ValueError):
        notification_bundle(
            subscription_id="admission",
            topic=TOPIC,
            status=status,
            kind=kind,
            events_since_start=1,
            events=events,
            content=content,
            base_url=BASE,
            bundle_id="x",
            timestamp=WHEN,
        )


# --- $status -------------------------------------------------------------------------------


def query_status(
    subscription_id: str, status: str, since: int, content: str = "id-only"
) -> dict[str, Any]:
    return status_parameters(
        subscription_id=subscription_id,
        topic=TOPIC,
        status=status,
        kind="query-status",
        events_since_start=since,
        events=(),
        content=content,
        base_url=BASE,
    )


def test_status_parameters_as_the_ig_status_example_reports_counts() -> None:
    ours = query_status("admission", "active", 2)
    assert validate(ours) == "Parameters"
    assert ours["meta"] == {"profile": [STATUS_PROFILE]}
    assert ours["parameter"] == [
        {"name": "subscription", "valueReference": {"reference": SUBSCRIPTION}},
        {"name": "topic", "valueCanonical": TOPIC},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": "query-status"},
        {"name": "events-since-subscription-start", "valueString": "2"},
    ]


def test_status_bundle_is_a_searchset_of_status_parameters() -> None:
    statuses = [query_status("admission", "active", 2), query_status("discharge", "error", 0)]
    bundle = status_bundle(statuses, BASE, "c0ffee00-0000-4000-8000-000000000000", WHEN)
    assert validate(bundle) == "Bundle"
    assert bundle["type"] == "searchset" and bundle["total"] == 2
    assert bundle["link"] == [{"relation": "self", "url": f"{BASE}/Subscription/$status"}]
    assert [e["search"] for e in bundle["entry"]] == [{"mode": "match"}] * 2
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"urn:uuid:{s['id']}" for s in statuses]
    assert statuses[0]["id"] != statuses[1]["id"]
    references = [
        e["resource"]["parameter"][0]["valueReference"]["reference"] for e in bundle["entry"]
    ]
    assert references == [SUBSCRIPTION, f"{BASE}/Subscription/discharge"]


def test_status_bundle_of_no_subscriptions_is_an_empty_searchset() -> None:
    bundle = status_bundle(
        [], BASE, "c0ffee00-0000-4000-8000-000000000001", WHEN, self_url=STATUS_URL
    )
    assert validate(bundle) == "Bundle"
    assert bundle["total"] == 0 and "entry" not in bundle
    assert bundle["link"] == [{"relation": "self", "url": STATUS_URL}]
    # Instants go out in UTC (the IG example's -05:00 is the same instant).
    assert bundle["timestamp"] == "2020-05-29T16:44:13.188243Z"


def test_the_status_entry_is_addressed_by_its_own_uuid() -> None:
    ours = build(content="id-only", events=(event(),))
    first = ours["entry"][0]
    assert first["fullUrl"] == f"urn:uuid:{first['resource']['id']}"
    assert str(uuid.UUID(first["resource"]["id"])) == first["resource"]["id"]
