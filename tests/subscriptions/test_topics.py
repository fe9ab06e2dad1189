"""Subscription topics (Subscriptions R5 Backport IG 1.1.0 "Topics", "Subscription Topics
in R4", "Filters", "Capability Statements"; R5 subscriptiontopic.html
"resourceTrigger.queryCriteria", "canFilterBy"): the Basic-wrapped topics load, fire on
the changes their criteria name, accept only the filters they allow, and the
CapabilityStatement lists the server's topics on its Subscription entry."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirserver.errors import NotSupported
from fhirserver.search.match import matches
from fhirserver.subscriptions.topics import (
    FilterBy,
    Topic,
    Trigger,
    load_topics,
    matches_filters,
    server_topics,
)

BASE = "http://fhirserver.dev/fhir/SubscriptionTopic"
TELEHEALTH = ["appointment-booked", "no-show", "patient-waiting", "visit-ended", "visit-started"]
R5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
R4B = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."
EXAMPLE_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/SubscriptionTopic/r4-encounter-complete"
)


def _ext(url: str, **value: Any) -> dict[str, Any]:
    return {"url": url, **value}


# The IG's own example, Basic/r4-encounter-complete (BackportTopics.fsh), as JSON: it
# mixes the R5 (5.0) and R4B (4.3) cross-version extension URLs, as published.
IG_EXAMPLE: dict[str, Any] = {
    "resourceType": "Basic",
    "id": "r4-encounter-complete",
    "modifierExtension": [_ext(R5 + "status", valueCode="draft")],
    "extension": [
        _ext(R5 + "url", valueUri=EXAMPLE_URL),
        _ext(R5 + "version", valueString="1.2.0"),
        _ext(R5 + "title", valueString="Backported SubscriptionTopic: R4 Encounter Complete"),
        _ext(R5 + "description", valueMarkdown="R4 example of a subscription topic."),
        _ext(
            R4B + "resourceTrigger",
            extension=[
                _ext("description", valueMarkdown="Triggered when an encounter is completed."),
                _ext("resource", valueUri="http://hl7.org/fhir/StructureDefinition/Encounter"),
                _ext("supportedInteraction", valueCode="create"),
                _ext("supportedInteraction", valueCode="update"),
                _ext(
                    "queryCriteria",
                    extension=[
                        _ext("previous", valueString="status:not=finished"),
                        _ext("resultForCreate", valueCode="test-passes"),
                        _ext("current", valueString="status=finished"),
                        _ext("resultForDelete", valueCode="test-fails"),
                        _ext("requireBoth", valueBoolean=True),
                    ],
                ),
                _ext(
                    "fhirPathCriteria",
                    valueString="(%previous.id.empty() or (%previous.status != 'finished'))"
                    " and (%current.status = 'finished')",
                ),
            ],
        ),
        _ext(
            R4B + "canFilterBy",
            extension=[
                _ext("resource", valueUri="Encounter"),
                _ext("filterParameter", valueString="subject"),
            ],
        ),
        _ext(
            R4B + "notificationShape",
            extension=[
                _ext("resource", valueUri="Encounter"),
                _ext("include", valueString="Encounter:patient&iterate=Patient.link"),
                _ext("include", valueString="Encounter:practitioner"),
                _ext("revInclude", valueString="Encounter:subject"),
            ],
        ),
    ],
    "code": {"coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]},
}


def encounter(status: str, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "e1", "status": status, **more}


def appointment(status: str, *actors: str) -> dict[str, Any]:
    participant = [{"actor": {"reference": a}, "status": "accepted"} for a in actors]
    return {"resourceType": "Appointment", "id": "a1", "status": status, "participant": participant}


# --- The loader, on the IG's example ---------------------------------------------------


def test_the_igs_example_topic_loads() -> None:
    topics = load_topics([IG_EXAMPLE, {"resourceType": "Basic", "id": "other", "code": {}}])
    assert list(topics) == [EXAMPLE_URL]
    topic = topics[EXAMPLE_URL]
    assert topic.title == "Backported SubscriptionTopic: R4 Encounter Complete"
    assert topic.resource_types() == {"Encounter"}
    (trigger,) = topic.triggers
    assert trigger.interactions == {"create", "update"}
    assert trigger.require_both and trigger.result_for_create and not trigger.result_for_delete
    assert trigger.fhirpath is not None
    assert topic.filters == (FilterBy("Encounter", "subject"),)
    assert topic.includes("Encounter") == (
        "Encounter:patient&iterate=Patient.link",
        "Encounter:practitioner",
    )
    assert topic.rev_includes("Encounter") == ("Encounter:subject",)


def test_the_igs_example_fires_when_an_encounter_completes() -> None:
    topic = load_topics([IG_EXAMPLE])[EXAMPLE_URL]
    assert topic.triggered("Encounter", "update", encounter("in-progress"), encounter("finished"))
    assert topic.triggered("Encounter", "create", None, encounter("finished"))
    assert not topic.triggered("Encounter", "update", encounter("finished"), encounter("finished"))
    assert not topic.triggered("Encounter", "update", encounter("planned"), encounter("arrived"))
    assert not topic.triggered("Encounter", "delete", encounter("finished"), None)
    assert not topic.triggered("Appointment", "update", encounter("planned"), encounter("finished"))


def test_the_fhirpath_criteria_must_hold_too() -> None:
    # Same query criteria, but the FHIRPath rule asks for a period end as well.
    changed = _replace_fhirpath(IG_EXAMPLE, "%current.period.end.exists()")
    topic = load_topics([changed])[EXAMPLE_URL]
    assert not topic.triggered("Encounter", "update", encounter("arrived"), encounter("finished"))
    ended = encounter("finished", period={"end": "2026-12-04T10:00:00Z"})
    assert topic.triggered("Encounter", "update", encounter("arrived"), ended)


def _replace_fhirpath(resource: dict[str, Any], expression: str) -> dict[str, Any]:
    return _replace_sub_extension(resource, "fhirPathCriteria", expression)


def _replace_sub_extension(resource: dict[str, Any], url: str, text: str) -> dict[str, Any]:
    """The topic with every sub-extension `url` holding `text` as its valueString."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("url") == url:
                return {"url": url, "valueString": text}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    changed: dict[str, Any] = walk(resource)
    return changed


def test_a_topic_whose_criteria_the_server_cannot_search_with_is_refused() -> None:
    broken = _replace_query(IG_EXAMPLE, "no-such-parameter=1")
    with pytest.raises(Exception, match="no-such-parameter"):
        load_topics([broken])


def _replace_query(resource: dict[str, Any], criteria: str) -> dict[str, Any]:
    return _replace_sub_extension(resource, "current", criteria)


# --- Trigger.fires: R5 queryCriteria semantics -----------------------------------------


def _trigger(**kwargs: Any) -> Trigger:
    topic = load_topics([IG_EXAMPLE])[EXAMPLE_URL]
    base = topic.triggers[0]
    fields = {
        "resource_type": "Encounter",
        "interactions": frozenset({"create", "update", "delete"}),
        "previous": base.previous,
        "current": base.current,
        "require_both": True,
        **kwargs,
    }
    return Trigger(**fields)


def test_result_for_create_stands_in_for_the_missing_previous_state() -> None:
    assert _trigger(result_for_create=True).fires("create", None, encounter("finished"))
    assert not _trigger(result_for_create=False).fires("create", None, encounter("finished"))


def test_result_for_delete_stands_in_for_the_missing_current_state() -> None:
    before = encounter("in-progress")
    assert not _trigger(result_for_delete=False).fires("delete", before, None)
    assert _trigger(result_for_delete=True).fires("delete", before, None)


def test_without_require_both_either_test_is_enough() -> None:
    either = _trigger(require_both=False)
    assert either.fires("update", encounter("finished"), encounter("finished"))
    assert either.fires("update", encounter("planned"), encounter("arrived"))
    assert not either.fires("update", encounter("finished"), encounter("arrived"))


def test_an_interaction_the_trigger_does_not_support_never_fires() -> None:
    updates_only = _trigger(interactions=frozenset({"update"}))
    assert not updates_only.fires("create", None, encounter("finished"))


def test_no_criteria_fires_on_every_supported_interaction() -> None:
    any_change = Trigger("Encounter", frozenset({"update"}))
    assert any_change.fires("update", encounter("planned"), encounter("planned"))


# --- The telehealth topics -------------------------------------------------------------


def test_the_server_ships_the_telehealth_topics() -> None:
    topics = server_topics()
    assert sorted(topics) == [f"{BASE}/{name}" for name in TELEHEALTH]
    for topic in topics.values():
        (resource_type,) = topic.resource_types()
        params = {f.parameter for f in topic.filters if f.resource_type == resource_type}
        assert {"patient", "practitioner", "location"} <= params
        assert topic.includes(resource_type), topic.url


@pytest.mark.parametrize(
    ("name", "before", "after", "fires"),
    [
        ("appointment-booked", None, "booked", True),
        ("appointment-booked", "proposed", "booked", True),
        ("appointment-booked", "booked", "booked", False),
        ("appointment-booked", "booked", "cancelled", False),
        ("patient-waiting", "booked", "arrived", True),
        ("patient-waiting", "arrived", "arrived", False),
        ("patient-waiting", "arrived", "fulfilled", False),
        ("no-show", "booked", "noshow", True),
        ("no-show", "noshow", "noshow", False),
        ("no-show", "booked", "cancelled", False),
    ],
)
def test_appointment_topics_fire_on_their_status_change(
    name: str, before: str | None, after: str, fires: bool
) -> None:
    topic = server_topics()[f"{BASE}/{name}"]
    previous = None if before is None else appointment(before)
    interaction = "create" if previous is None else "update"
    assert topic.triggered("Appointment", interaction, previous, appointment(after)) is fires


@pytest.mark.parametrize(
    ("name", "before", "after", "fires"),
    [
        ("visit-started", None, "in-progress", True),
        ("visit-started", "arrived", "in-progress", True),
        ("visit-started", "in-progress", "in-progress", False),
        ("visit-started", "in-progress", "finished", False),
        ("visit-ended", "in-progress", "finished", True),
        ("visit-ended", "finished", "finished", False),
        ("visit-ended", None, "in-progress", False),
    ],
)
def test_encounter_topics_fire_on_their_status_change(
    name: str, before: str | None, after: str, fires: bool
) -> None:
    topic = server_topics()[f"{BASE}/{name}"]
    previous = None if before is None else encounter(before)
    interaction = "create" if previous is None else "update"
    assert topic.triggered("Encounter", interaction, previous, encounter(after)) is fires


def test_deleting_a_booked_appointment_is_no_booking() -> None:
    topic = server_topics()[f"{BASE}/appointment-booked"]
    assert not topic.triggered("Appointment", "delete", appointment("booked"), None)


# --- Topic.filter_query: only what canFilterBy allows ----------------------------------


def booked_topic() -> Topic:
    return server_topics()[f"{BASE}/appointment-booked"]


def test_an_allowed_filter_becomes_the_search_it_names() -> None:
    query = booked_topic().filter_query(
        "Appointment?patient=Patient/p1&practitioner=Practitioner/d1"
    )
    assert query.resource_types == ("Appointment",)
    both = appointment("booked", "Patient/p1", "Practitioner/d1")
    assert matches(query, both)
    assert not matches(query, appointment("booked", "Patient/p1", "Practitioner/d2"))
    assert not matches(query, appointment("booked", "Patient/p2", "Practitioner/d1"))


def test_a_front_desk_filters_on_its_clinic() -> None:
    query = booked_topic().filter_query("Appointment?location=Location/clinic-north")
    assert matches(query, appointment("booked", "Patient/p1", "Location/clinic-north"))
    assert not matches(query, appointment("booked", "Patient/p1", "Location/clinic-south"))
    visits = server_topics()[f"{BASE}/visit-started"]
    by_provider = visits.filter_query("Encounter?service-provider=Organization/north")
    assert matches(
        by_provider, encounter("in-progress", serviceProvider={"reference": "Organization/north"})
    )
    assert not matches(by_provider, encounter("in-progress"))


def test_a_parameter_the_topic_does_not_list_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="'status'") as raised:
        booked_topic().filter_query("Appointment?status=booked")
    assert raised.value.status == 400
    assert "patient" in str(raised.value)  # it says what may be used instead


def test_a_modifier_the_topic_does_not_allow_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="'patient:missing'"):
        booked_topic().filter_query("Appointment?patient:missing=true")


def test_a_comparator_the_topic_does_not_allow_is_not_supported() -> None:
    topic = Topic(
        "urn:t",
        "t",
        (Trigger("Encounter", frozenset({"update"})),),
        filters=(FilterBy("Encounter", "date", comparators=("gt",)),),
    )
    assert topic.filter_query("Encounter?date=gt2026-01-01").clauses
    assert topic.filter_query("Encounter?date=2026-01-01").clauses  # eq: always
    with pytest.raises(NotSupported, match="'lt'"):
        topic.filter_query("Encounter?date=lt2026-01-01")


def test_a_filter_on_a_type_the_topic_is_not_about_is_not_supported() -> None:
    with pytest.raises(NotSupported, match="Encounter"):
        booked_topic().filter_query("Encounter?patient=Patient/p1")


def test_several_filters_of_one_subscription_and_together() -> None:
    queries = booked_topic().filter_queries(
        ["Appointment?patient=Patient/p1", "Appointment?location=Location/north"]
    )
    ok = appointment("booked", "Patient/p1", "Location/north")
    assert matches_filters(queries, "Appointment", ok)
    assert not matches_filters(queries, "Appointment", appointment("booked", "Patient/p1"))
    assert not matches_filters(queries, "Appointment", appointment("booked", "Location/north"))


# --- The CapabilityStatement -----------------------------------------------------------

TOPIC_CANONICAL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)


async def test_the_capability_statement_lists_every_topic_on_subscription(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    subscription = resources["Subscription"]
    listed = [e["valueCanonical"] for e in subscription["extension"] if e["url"] == TOPIC_CANONICAL]
    assert sorted(listed) == sorted(server_topics())
    assert subscription["supportedProfile"] == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
    ]
    assert "extension" not in resources["Patient"]
