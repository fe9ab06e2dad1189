"""Patient `$everything` as an interaction (R4 patient-operations.html#everything,
OperationDefinition Patient-everything): the patient's compartment plus the resources it
references, `_since`, `_type`, `_count` paging over a snapshot, on every backend.

Data: Patients a and b; a's Encounter (with Practitioner p1, at Organization org1, in
Location loc1) and Observations; b's Observation by Practitioner p2; an Organization
nobody references.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirserver.auth.access import Access
from fhirserver.clock import system_clock
from fhirserver.errors import BadRequest, NotFound
from fhirserver.interactions import crud
from fhirserver.interactions.everything import (
    EverythingPage,
    EverythingRequest,
    everything,
    everything_request,
)
from fhirserver.interactions.read_options import ReadOptions
from fhirserver.interactions.rules import WriteContext
from fhirserver.interactions.transaction import process
from fhirserver.resources import codec
from fhirserver.storage.base import Store, Version
from tests.clock import MovableClock

EVERYONE = Access.everything()
SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-2019"
# The smallest patient bundle: 66 resources, an Organization and a Practitioner among them.
SYNTHEA_PATIENT = "Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json"

RECORD: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "a",
        "managingOrganization": {"reference": "Organization/org1"},
    },
    {"resourceType": "Patient", "id": "b"},
    {"resourceType": "Practitioner", "id": "p1"},
    {"resourceType": "Practitioner", "id": "p2"},
    # org-1 (R4): an Organization has a name or an identifier.
    {"resourceType": "Organization", "id": "org1", "name": "Org One"},
    {"resourceType": "Organization", "id": "lonely", "name": "Lonely"},
    {"resourceType": "Location", "id": "loc1"},
    {
        "resourceType": "Encounter",
        "id": "ea",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/a"},
        "participant": [{"individual": {"reference": "Practitioner/p1"}}],
        "serviceProvider": {"reference": "Organization/org1"},
        "location": [{"location": {"reference": "Location/loc1"}}],
    },
    {
        "resourceType": "Observation",
        "id": "oa1",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/a"},
        "encounter": {"reference": "Encounter/ea"},
        "performer": [{"reference": "Practitioner/p1"}],
    },
    {
        "resourceType": "Observation",
        "id": "oa2",
        "status": "final",
        "code": {"text": "height"},
        "subject": {"reference": "Patient/a"},
    },
    {
        "resourceType": "Observation",
        "id": "ob1",
        "status": "final",
        "code": {"text": "weight"},
        "subject": {"reference": "Patient/b"},
        "performer": [{"reference": "Practitioner/p2"}],
    },
]
A_MEMBERS = {"Patient/a", "Encounter/ea", "Observation/oa1", "Observation/oa2"}
A_REFERENCED = {"Practitioner/p1", "Organization/org1", "Location/loc1"}


@pytest.fixture
def clock() -> MovableClock:
    clock = MovableClock()
    clock.move_to(datetime(2025, 3, 1, 9, 0, tzinfo=UTC))
    return clock


async def put(store: Store, clock: MovableClock, resource: dict[str, Any]) -> Version:
    result = await crud.update(
        store, WriteContext(clock=clock), resource["resourceType"], resource["id"], resource
    )
    return result.version


@pytest.fixture
async def record(store: Store, clock: MovableClock) -> Store:
    for resource in RECORD:
        await put(store, clock, resource)
    return store


def keys(versions: list[Version]) -> list[str]:
    return [f"{v.resource_type}/{v.id}" for v in versions]


async def whole(
    store: Store, patient_id: str | None, params: list[tuple[str, str]] | None = None
) -> EverythingPage:
    request = everything_request(patient_id, params or [("_count", "1000")], ReadOptions())
    page = await everything(store, request, EVERYONE, system_clock)
    assert page.next_cursor is None
    return page


async def test_a_record_is_its_compartment_and_what_that_references(record: Store) -> None:
    page = await whole(record, "a")
    assert set(keys(page.members)) == A_MEMBERS
    assert set(keys(page.referenced)) == A_REFERENCED
    # Ordered by type, then id; nothing twice.
    assert keys(page.members) == ["Encounter/ea", "Observation/oa1", "Observation/oa2", "Patient/a"]
    assert keys(page.referenced) == ["Location/loc1", "Organization/org1", "Practitioner/p1"]


async def test_another_patients_record_is_absent(record: Store) -> None:
    page = await whole(record, "b")
    assert set(keys(page.members)) == {"Patient/b", "Observation/ob1"}
    assert set(keys(page.referenced)) == {"Practitioner/p2"}


async def test_every_patients_records_each_resource_once(record: Store) -> None:
    page = await whole(record, None)
    assert sorted(keys(page.members)) == sorted([*A_MEMBERS, "Patient/b", "Observation/ob1"])
    assert set(keys(page.referenced)) == {*A_REFERENCED, "Practitioner/p2"}


async def test_unknown_patient_is_not_found(record: Store) -> None:
    with pytest.raises(NotFound):
        await whole(record, "nobody")


async def test_type_limits_members_and_referenced(record: Store) -> None:
    page = await whole(record, "a", [("_type", "Observation,Practitioner"), ("_type", "Patient")])
    assert keys(page.members) == ["Observation/oa1", "Observation/oa2", "Patient/a"]
    assert keys(page.referenced) == ["Practitioner/p1"]


async def test_since_returns_only_what_changed(record: Store, clock: MovableClock) -> None:
    clock.move_to(datetime(2025, 3, 2, tzinfo=UTC))
    changed = dict(RECORD[-2], status="amended")
    await put(record, clock, changed)
    await put(record, clock, {"resourceType": "Practitioner", "id": "p1", "active": True})
    page = await whole(record, "a", [("_since", "2025-03-02T00:00:00Z"), ("_count", "50")])
    assert keys(page.members) == ["Observation/oa2"]
    assert keys(page.referenced) == ["Practitioner/p1"]
    later = await whole(record, "a", [("_since", "2025-03-02T00:00:01Z")])
    assert (later.members, later.referenced) == ([], [])


async def test_unknown_inputs_and_bad_values_are_refused() -> None:
    options = ReadOptions()
    with pytest.raises(BadRequest):
        everything_request("a", [("start", "2020-01-01")], options)
    with pytest.raises(BadRequest):
        everything_request("a", [("_type", "NoSuchType")], options)
    with pytest.raises(BadRequest):
        everything_request("a", [("_count", "0")], options)
    with pytest.raises(BadRequest):
        everything_request("a", [("_since", "yesterday")], options)
    capped = everything_request("a", [("_count", "99999")], ReadOptions(max_page_size=300))
    assert capped.count == 300


async def test_a_forged_cursor_is_refused(record: Store) -> None:
    with pytest.raises(BadRequest):
        await everything(record, EverythingRequest("a", cursor="bm9wZQ"), EVERYONE, system_clock)


async def test_paging_a_synthea_record_while_others_write(
    store: Store, clock: MovableClock
) -> None:
    """Every resource of the snapshot exactly once, as it was at the first page, while
    the record changes between pages."""
    bundle = codec.load_object((SYNTHEA / SYNTHEA_PATIENT).read_bytes())
    await process(store, WriteContext(clock=clock), bundle, ReadOptions())
    (patient,) = [v for v in await _all_of(store, "Patient")]
    expected = await whole(store, patient.id)
    expected_keys = keys(expected.members) + keys(expected.referenced)
    assert len(expected_keys) == len(bundle["entry"]) == 66
    referenced_types = [key.split("/")[0] for key in keys(expected.referenced)]
    assert referenced_types == ["Organization", "Practitioner"]

    seen: list[Version] = []
    cursor: str | None = None
    pages = 0
    while True:
        request = EverythingRequest(patient.id, count=7, cursor=cursor)
        page = await everything(store, request, EVERYONE, system_clock)
        seen += page.members + page.referenced
        pages += 1
        if pages == 2:
            await _write_between_pages(store, clock, patient.id, seen, expected_keys)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages >= 10
    assert sorted(keys(seen)) == sorted(expected_keys)
    # Each as it was at the first page: version 1, though some have a second now.
    assert {v.version for v in seen} == {1}


async def _write_between_pages(
    store: Store,
    clock: MovableClock,
    patient_id: str,
    seen: list[Version],
    everything_keys: list[str],
) -> None:
    """Update one resource already returned and one still to come (both gain version
    2), create a new Observation of the patient: none of it shows in later pages."""
    clock.move_to(datetime(2025, 3, 5, tzinfo=UTC))
    delivered = set(keys(seen))
    returned = next(k for k in everything_keys if k in delivered)
    pending = next(
        k for k in reversed(everything_keys) if k not in delivered and k.startswith("Obs")
    )
    for key in (returned, pending):
        kind, _, resource_id = key.partition("/")
        current = await store.read(kind, resource_id)
        assert current is not None and current.body is not None
        changed = codec.load_object(current.body)
        changed.setdefault("meta", {})["tag"] = [{"code": "changed"}]
        await crud.update(store, WriteContext(clock=clock), kind, resource_id, changed)
    new = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "late"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    await crud.create(store, WriteContext(clock=clock), "Observation", new)


async def _all_of(store: Store, resource_type: str) -> list[Version]:
    rows = await store.scan(None, 10_000)
    return [row for row in rows if row.resource_type == resource_type]


async def test_paging_many_patients_costs_the_same_on_every_referenced_page(
    store: Store, clock: MovableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Patient/$everything` over many patients: a referenced-phase page reads its own
    resources, never all the members again (which made paging quadratic)."""
    patients = 40
    for n in range(patients):
        await put(store, clock, {"resourceType": "Patient", "id": f"pt{n}"})
        await put(store, clock, {"resourceType": "Practitioner", "id": f"dr{n}"})
        observation = {
            "resourceType": "Observation",
            "id": f"ob{n}",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/pt{n}"},
            "performer": [{"reference": f"Practitioner/dr{n}"}],
        }
        await put(store, clock, observation)
    calls: dict[str, int] = {}
    for name in ("search", "read", "read_many", "history", "get_record", "put_record"):
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        monkeypatch.setattr(store, name, counted)

    referenced: list[str] = []
    costs: list[dict[str, int]] = []
    cursor: str | None = None
    while True:
        calls.clear()
        request = EverythingRequest(None, count=5, cursor=cursor)
        page = await everything(store, request, EVERYONE, system_clock)
        if page.referenced and not page.members:
            costs.append(dict(calls))
        referenced += keys(page.referenced)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(referenced) == sorted(f"Practitioner/dr{n}" for n in range(patients))
    assert len(costs) == patients // 5
    # The first referenced page scans the members once and records the keys; each later
    # one reads one record of keys and at most one resource per entry, no member search.
    first, *later = costs
    assert first.get("put_record", 0) == 1 and first.get("search", 0) > patients
    for cost in later:
        assert cost.get("search", 0) == 0, cost
        assert cost.get("get_record", 0) == 1 and cost.get("read", 0) <= 5, cost


async def test_a_referenced_phase_cursor_pages_only_its_own_patients_record(
    record: Store,
) -> None:
    """The referenced keys kept for one patient's paging are not another's to page on."""
    page = await everything(record, EverythingRequest("a", count=4), EVERYONE, system_clock)
    page = await everything(
        record, EverythingRequest("a", count=1, cursor=page.next_cursor), EVERYONE, system_clock
    )
    assert page.referenced and page.next_cursor is not None
    with pytest.raises(BadRequest):
        await everything(
            record, EverythingRequest("b", cursor=page.next_cursor), EVERYONE, system_clock
        )
