"""Chained parameters, reverse chaining and compartment search over HTTP (R4
search.html#chaining, #has; http.html#search and compartmentdefinition.html)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import (
    create,
    delete,
    encounter,
    fetch,
    ids,
    matches,
    observation,
    outcomes,
    patient,
    put,
    ref,
)


def provenance(target: str, agent: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [ref(target)],
        "recorded": "2020-01-01T00:00:00Z",
        "agent": [{"who": ref(agent)}],
    }


# --- chaining ----------------------------------------------------------------------------


async def test_chain_with_type_modifier(client: httpx.AsyncClient) -> None:
    smith = await create(client, patient("Smith"))
    jones = await create(client, patient("Jones"))
    ward = await create(client, {"resourceType": "Location", "name": "Smith Wing"})
    about_smith = await create(client, observation(subject=ref(f"Patient/{smith}")))
    about_jones = await create(client, observation(subject=ref(f"Patient/{jones}")))
    await create(client, observation(subject=ref(f"Location/{ward}")))
    await create(client, observation())

    assert await matches(client, "/Observation", [("subject:Patient.name", "smith")]) == [
        about_smith
    ]
    assert await matches(client, "/Observation", [("subject:Patient.family", "Jones")]) == [
        about_jones
    ]
    assert await matches(
        client, "/Observation", [("subject:Patient.name", "smith,jones")]
    ) == sorted([about_smith, about_jones])
    assert await matches(client, "/Observation", [("subject:Patient.name:exact", "Smit")]) == []
    assert await matches(client, "/Observation", [("subject:Patient.name", "nobody")]) == []


async def test_chain_over_several_target_types(client: httpx.AsyncClient) -> None:
    smith = await create(client, patient("Smith"))
    ward = await create(client, {"resourceType": "Location", "name": "Smith Wing"})
    pump = await create(
        client, {"resourceType": "Device", "deviceName": [{"name": "Smith", "type": "model-name"}]}
    )
    other = await create(client, patient("Jones"))
    about_smith = await create(client, observation(subject=ref(f"Patient/{smith}")))
    about_ward = await create(client, observation(subject=ref(f"Location/{ward}")))
    # A Device has no `name` search parameter (its is device-name): no match through it.
    await create(client, observation(subject=ref(f"Device/{pump}")))
    await create(client, observation(subject=ref(f"Patient/{other}")))

    assert await matches(client, "/Observation", [("subject.name", "smith")]) == sorted(
        [about_smith, about_ward]
    )
    assert await matches(client, "/Observation", [("subject:Location.name", "smith")]) == [
        about_ward
    ]


async def test_chain_across_two_levels(client: httpx.AsyncClient) -> None:
    acme = await create(client, {"resourceType": "Organization", "name": "Acme Hospital"})
    other_org = await create(client, {"resourceType": "Organization", "name": "Other Clinic"})
    at_acme = await create(client, encounter(serviceProvider=ref(f"Organization/{acme}")))
    elsewhere = await create(client, encounter(serviceProvider=ref(f"Organization/{other_org}")))
    unprovided = await create(client, encounter())
    in_acme = await create(client, observation(encounter=ref(f"Encounter/{at_acme}")))
    also_acme = await create(client, observation(encounter=ref(f"Encounter/{at_acme}")))
    await create(client, observation(encounter=ref(f"Encounter/{elsewhere}")))
    await create(client, observation(encounter=ref(f"Encounter/{unprovided}")))
    await create(client, observation())

    assert await matches(
        client, "/Observation", [("encounter.service-provider.name", "acme")]
    ) == sorted([in_acme, also_acme])
    assert await matches(
        client, "/Observation", [("encounter:Encounter.service-provider:Organization.name", "acme")]
    ) == sorted([in_acme, also_acme])
    assert await matches(
        client, "/Observation", [("encounter.service-provider._id", acme)]
    ) == sorted([in_acme, also_acme])
    assert (
        await matches(client, "/Observation", [("encounter.service-provider.name", "nowhere")])
        == []
    )


async def test_chain_on_id(client: httpx.AsyncClient) -> None:
    first = await create(client, patient("First"))
    second = await create(client, patient("Second"))
    of_first = await create(client, observation(subject=ref(f"Patient/{first}")))
    of_second = await create(client, observation(subject=ref(f"Patient/{second}")))
    assert await matches(client, "/Observation", [("subject:Patient._id", first)]) == [of_first]
    assert await matches(client, "/Observation", [("subject._id", second)]) == [of_second]
    assert await matches(client, "/Observation", [("subject._id", f"{first},{second}")]) == sorted(
        [of_first, of_second]
    )
    assert await matches(client, "/Observation", [("subject._id", "no-such-id")]) == []


async def test_chains_and_with_other_criteria(client: httpx.AsyncClient) -> None:
    smith = await create(client, patient("Smith"))
    jones = await create(client, patient("Jones"))
    smith_glucose = await create(
        client, observation(code="glucose", subject=ref(f"Patient/{smith}"))
    )
    await create(client, observation(code="weight", subject=ref(f"Patient/{smith}")))
    await create(client, observation(code="glucose", subject=ref(f"Patient/{jones}")))
    assert await matches(
        client, "/Observation", [("subject:Patient.name", "smith"), ("code", "glucose")]
    ) == [smith_glucose]
    # Two chains on the same reference: each may be met by any target (AND of ORs).
    assert (
        await matches(
            client,
            "/Observation",
            [("subject:Patient.name", "smith"), ("subject:Patient.name", "jones")],
        )
        == []
    )


async def test_chain_through_a_deleted_target_does_not_match(client: httpx.AsyncClient) -> None:
    gone = await create(client, patient("Gone"))
    kept = await create(client, patient("Gone"))
    of_gone = await create(client, observation(subject=ref(f"Patient/{gone}")))
    of_kept = await create(client, observation(subject=ref(f"Patient/{kept}")))
    assert await matches(client, "/Observation", [("subject:Patient.name", "gone")]) == sorted(
        [of_gone, of_kept]
    )
    await delete(client, f"Patient/{gone}")
    assert await matches(client, "/Observation", [("subject:Patient.name", "gone")]) == [of_kept]
    assert await matches(client, "/Observation", [("subject.name", "gone")]) == [of_kept]
    assert await matches(client, "/Observation", [("subject._id", gone)]) == []
    assert await matches(client, "/Observation", [("subject:Patient._id", gone)]) == []
    # The reference itself is still there.
    assert await matches(client, "/Observation", [("subject", f"Patient/{gone}")]) == [of_gone]


async def test_negated_chain_needs_an_existing_target(client: httpx.AsyncClient) -> None:
    """A chain matches when the referenced resource matches the inner criterion; a deleted
    or never-created target matches nothing, not even `:not` or `:missing=true`."""
    gone = await create(client, {"resourceType": "Patient", "gender": "female"})
    here = await create(client, {"resourceType": "Patient", "gender": "female"})
    await create(client, observation(subject=ref(f"Patient/{gone}")))
    of_here = await create(client, observation(subject=ref(f"Patient/{here}")))
    await create(client, observation(subject=ref("Patient/never-created")))
    await delete(client, f"Patient/{gone}")
    assert await matches(client, "/Observation", [("subject:Patient.gender:not", "male")]) == [
        of_here
    ]
    assert await matches(
        client, "/Observation", [("subject:Patient.birthdate:missing", "true")]
    ) == [of_here]
    assert await matches(client, "/Observation", [("subject.gender:not", "male")]) == [of_here]


async def test_chain_on_last_updated_skips_a_deleted_target(client: httpx.AsyncClient) -> None:
    gone = await create(client, patient("Gone"))
    here = await create(client, patient("Here"))
    await create(client, observation(subject=ref(f"Patient/{gone}")))
    of_here = await create(client, observation(subject=ref(f"Patient/{here}")))
    await delete(client, f"Patient/{gone}")
    assert await matches(client, "/Observation", [("subject._lastUpdated", "ge2000-01-01")]) == [
        of_here
    ]
    assert await matches(
        client, "/Observation", [("subject:Patient._lastUpdated", "ge2000-01-01")]
    ) == [of_here]


async def test_chain_through_a_non_reference_is_ignored_or_refused(
    client: httpx.AsyncClient,
) -> None:
    await create(client, observation())
    bundle = await fetch(client, "/Observation", [("code.name", "x")])
    assert len(outcomes(bundle)) == 1
    strict = await client.get(
        "/Observation", params={"code.name": "x"}, headers={"Prefer": "handling=strict"}
    )
    assert strict.status_code == 400


# --- _has --------------------------------------------------------------------------------


async def test_has(client: httpx.AsyncClient) -> None:
    with_glucose = await create(client, patient("Glucose"))
    with_weight = await create(client, patient("Weight"))
    with_both = await create(client, patient("Both"))
    await create(client, patient("Nothing"))
    for pid, codes in (
        (with_glucose, ["glucose"]),
        (with_weight, ["weight"]),
        (with_both, ["glucose", "weight"]),
    ):
        for code in codes:
            await create(client, observation(code=code, subject=ref(f"Patient/{pid}")))
    # An Observation with that code whose subject is not a Patient does not count.
    group = await create(client, {"resourceType": "Group", "type": "person", "actual": True})
    await create(client, observation(code="height", subject=ref(f"Group/{group}")))

    assert await matches(client, "/Patient", [("_has:Observation:patient:code", "glucose")]) == (
        sorted([with_glucose, with_both])
    )
    assert await matches(
        client, "/Patient", [("_has:Observation:patient:code", "http://loinc.org|weight")]
    ) == sorted([with_weight, with_both])
    assert await matches(client, "/Patient", [("_has:Observation:patient:code", "height")]) == []
    assert await matches(
        client, "/Patient", [("_has:Observation:subject:code", "glucose")]
    ) == sorted([with_glucose, with_both])


async def test_has_with_or_and_and_values(client: httpx.AsyncClient) -> None:
    a = await create(client, patient("A"))
    b = await create(client, patient("B"))
    c = await create(client, patient("C"))
    await create(client, patient("D"))
    await create(client, observation(code="glucose", subject=ref(f"Patient/{a}")))
    await create(client, observation(code="weight", subject=ref(f"Patient/{b}")))
    await create(client, observation(code="glucose", subject=ref(f"Patient/{c}")))
    await create(client, observation(code="weight", subject=ref(f"Patient/{c}")))
    assert await matches(
        client, "/Patient", [("_has:Observation:patient:code", "glucose,weight")]
    ) == sorted([a, b, c])
    # Repeated: AND, possibly met by different Observations.
    assert await matches(
        client,
        "/Patient",
        [("_has:Observation:patient:code", "glucose"), ("_has:Observation:patient:code", "weight")],
    ) == [c]


async def test_has_ignores_deleted_sources(client: httpx.AsyncClient) -> None:
    pid = await create(client, patient("Deleted"))
    obs = await create(client, observation(code="glucose", subject=ref(f"Patient/{pid}")))
    assert await matches(client, "/Patient", [("_has:Observation:patient:code", "glucose")]) == [
        pid
    ]
    await delete(client, f"Observation/{obs}")
    assert await matches(client, "/Patient", [("_has:Observation:patient:code", "glucose")]) == []


async def test_nested_has(client: httpx.AsyncClient) -> None:
    doctor = await put(client, {"resourceType": "Practitioner", "id": "dr-who"})
    nurse = await put(client, {"resourceType": "Practitioner", "id": "nurse-joy"})
    seen_by_doctor = await create(client, patient("DoctorSeen"))
    seen_by_nurse = await create(client, patient("NurseSeen"))
    unrecorded = await create(client, patient("Unrecorded"))
    obs_doctor = await create(client, observation(subject=ref(f"Patient/{seen_by_doctor}")))
    obs_nurse = await create(client, observation(subject=ref(f"Patient/{seen_by_nurse}")))
    await create(client, observation(subject=ref(f"Patient/{unrecorded}")))
    await create(client, provenance(f"Observation/{obs_doctor}", f"Practitioner/{doctor}"))
    await create(client, provenance(f"Observation/{obs_nurse}", f"Practitioner/{nurse}"))
    # A Provenance about the patient directly is not about one of its Observations.
    await create(client, provenance(f"Patient/{unrecorded}", f"Practitioner/{doctor}"))

    name = "_has:Observation:patient:_has:Provenance:target:agent"
    assert await matches(client, "/Patient", [(name, f"Practitioner/{doctor}")]) == [seen_by_doctor]
    assert await matches(
        client, "/Patient", [(name, f"Practitioner/{doctor},Practitioner/{nurse}")]
    ) == sorted([seen_by_doctor, seen_by_nurse])
    assert await matches(client, "/Patient", [(name, "Practitioner/nobody")]) == []


async def test_has_with_a_chain_inside(client: httpx.AsyncClient) -> None:
    """_has:Observation:patient:encounter.service-provider.name - a chain at the far end."""
    acme = await create(client, {"resourceType": "Organization", "name": "Acme"})
    visit = await create(client, encounter(serviceProvider=ref(f"Organization/{acme}")))
    treated = await create(client, patient("Treated"))
    await create(client, patient("Untreated"))
    await create(
        client,
        observation(subject=ref(f"Patient/{treated}"), encounter=ref(f"Encounter/{visit}")),
    )
    assert await matches(
        client, "/Patient", [("_has:Observation:patient:encounter.service-provider.name", "acme")]
    ) == [treated]


@pytest.mark.parametrize(
    "name",
    [
        "_has:Observation:patient",
        "_has:NoSuchType:patient:code",
        "_has:Observation:code:code",
    ],
)
async def test_malformed_has_is_refused(client: httpx.AsyncClient, name: str) -> None:
    answer = await client.get("/Patient", params={name: "x"})
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


# --- compartment search ------------------------------------------------------------------


async def _compartment_data(client: httpx.AsyncClient) -> dict[str, str]:
    await put(client, {"resourceType": "Patient", "id": "123", "name": [{"family": "Owner"}]})
    await put(client, {"resourceType": "Patient", "id": "456", "name": [{"family": "Else"}]})
    made = {
        "glucose": observation(code="glucose", subject=ref("Patient/123")),
        "weight": observation(code="weight", subject=ref("Patient/123")),
        # In the compartment as performer, not as subject.
        "performed": observation(
            code="glucose", subject=ref("Patient/456"), performer=[ref("Patient/123")]
        ),
        "other": observation(code="glucose", subject=ref("Patient/456")),
        "visit": encounter(subject=ref("Patient/123")),
        "visit2": encounter(subject=ref("Patient/123")),
        "other_visit": encounter(subject=ref("Patient/456")),
    }
    return {key: await create(client, resource) for key, resource in made.items()}


async def test_compartment_search_with_criteria(client: httpx.AsyncClient) -> None:
    made = await _compartment_data(client)
    assert await matches(client, "/Patient/123/Observation", [("code", "glucose")]) == sorted(
        [made["glucose"], made["performed"]]
    )
    assert await matches(client, "/Patient/123/Observation", []) == sorted(
        [made["glucose"], made["weight"], made["performed"]]
    )
    assert await matches(client, "/Patient/456/Observation", [("code", "weight")]) == []


async def test_compartment_search_without_criteria(client: httpx.AsyncClient) -> None:
    made = await _compartment_data(client)
    bundle = await fetch(client, "/Patient/123/Encounter", [])
    assert sorted(ids(bundle)) == sorted([made["visit"], made["visit2"]])
    assert all(
        e["fullUrl"] == f"http://testserver/fhir/Encounter/{e['resource']['id']}"
        for e in bundle["entry"]
    )
    assert await matches(client, "/Patient/456/Encounter", []) == [made["other_visit"]]
    assert await matches(client, "/Patient/789/Encounter", []) == []


async def test_compartment_search_combines_with_result_parameters(
    client: httpx.AsyncClient,
) -> None:
    made = await _compartment_data(client)
    bundle = await fetch(
        client,
        "/Patient/123/Observation",
        [("code", "glucose"), ("_include", "Observation:subject"), ("_count", "1")],
    )
    assert len(ids(bundle)) == 1
    next_url = next(item["url"] for item in bundle["link"] if item["relation"] == "next")
    rest = await fetch(client, next_url)
    assert sorted(ids(bundle) + ids(rest)) == sorted([made["glucose"], made["performed"]])


@pytest.mark.parametrize(
    "path", ["/Organization/1/Observation", "/Basic/1/Observation", "/NoSuchType/1/Observation"]
)
async def test_unknown_compartment_is_refused(client: httpx.AsyncClient, path: str) -> None:
    await _compartment_data(client)
    answer = await client.get(path)
    assert 400 <= answer.status_code < 500
    assert answer.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("member", ["Organization", "Medication", "Location"])
async def test_type_outside_the_patient_compartment_is_400(
    client: httpx.AsyncClient, member: str
) -> None:
    await _compartment_data(client)
    answer = await client.get(f"/Patient/123/{member}")
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"
