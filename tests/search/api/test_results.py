"""Search results over HTTP (R4 search.html#return, #sort, #count, #include, #revinclude,
#summary, #elements, #total, #errors): what a searchset Bundle holds and in what order,
through every way in (GET and POST at type and system level)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from tests.search.api.search_helpers import (
    create,
    delete,
    encounter,
    entries,
    fetch,
    ids,
    link,
    observation,
    patient,
    put,
    ref,
    resources_of,
    risk,
    searchset,
    seed,
)

BASE = "http://testserver/fhir"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUBSETTED = "SUBSETTED"
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}

Params = list[tuple[str, str]]


# --- helpers ---------------------------------------------------------------------------


async def post_search(
    client: httpx.AsyncClient, url: str, body: Params, params: Params | None = None
) -> dict[str, Any]:
    answer = await client.post(url, params=params, content=urlencode(body), headers=FORM)
    return searchset(answer)


def keys(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [f"{r['resourceType']}/{r['id']}" for r in resources_of(bundle, mode)]


def query_of(url: str) -> tuple[str, list[tuple[str, str]]]:
    """(scheme://host/path, the sorted query parameters) of a link."""
    parts = urlsplit(url)
    return (
        f"{parts.scheme}://{parts.netloc}{parts.path}",
        sorted(parse_qsl(parts.query, keep_blank_values=True)),
    )


def tags(resource: dict[str, Any]) -> list[str]:
    return [tag.get("code", "") for tag in resource.get("meta", {}).get("tag", [])]


async def sort_both_ways(
    client: httpx.AsyncClient, url: str, key: str
) -> tuple[list[str], list[str]]:
    """The ids of the matches sorted on `key`, ascending, then descending (`-key`)."""
    ascending = await fetch(client, url, [("_sort", key)])
    descending = await fetch(client, url, [("_sort", f"-{key}")])
    return ids(ascending), ids(descending)


async def the_match(client: httpx.AsyncClient, url: str, params: Params) -> dict[str, Any]:
    """The one resource the search matches."""
    [resource] = resources_of(await fetch(client, url, params))
    return resource


# --- _sort -----------------------------------------------------------------------------


async def test_sort_string_ascending_descending_missing_last(client: httpx.AsyncClient) -> None:
    baker = await create(client, patient("Baker"))
    nameless = await create(client, patient(gender="male"))
    adams = await create(client, patient("Adams"))
    cole = await create(client, patient("Cole"))
    assert await sort_both_ways(client, "/Patient", "family") == (
        [adams, baker, cole, nameless],
        [cole, baker, adams, nameless],
    )


async def test_sort_date_ascending_descending_missing_last(client: httpx.AsyncClient) -> None:
    middle = await create(client, patient(birth="1990-05-01"))
    unknown = await create(client, patient("NoBirthDate"))
    oldest = await create(client, patient(birth="1970-01-01"))
    youngest = await create(client, patient(birth="2001-12-31"))
    assert await sort_both_ways(client, "/Patient", "birthdate") == (
        [oldest, middle, youngest, unknown],
        [youngest, middle, oldest, unknown],
    )


async def test_sort_token_ascending_descending_missing_last(client: httpx.AsyncClient) -> None:
    other = await create(client, patient(gender="other"))
    female = await create(client, patient(gender="female"))
    unknown_gender = await create(client, patient("Ungendered"))
    male = await create(client, patient(gender="male"))
    assert await sort_both_ways(client, "/Patient", "gender") == (
        [female, male, other, unknown_gender],
        [other, male, female, unknown_gender],
    )


async def test_sort_number_ascending_descending_missing_last(client: httpx.AsyncClient) -> None:
    subject = await create(client, patient("Risky"))

    def assessment(probability: float | None) -> dict[str, Any]:
        return risk(subject=f"Patient/{subject}", probabilityDecimal=probability)

    half = await create(client, assessment(0.5))
    none = await create(client, assessment(None))
    small = await create(client, assessment(0.05))
    large = await create(client, assessment(0.9))
    assert await sort_both_ways(client, "/RiskAssessment", "probability") == (
        [small, half, large, none],
        [large, half, small, none],
    )


async def test_sort_by_id(client: httpx.AsyncClient) -> None:
    for resource_id in ("b-2", "c-3", "a-1"):
        await put(client, patient(id=resource_id))
    assert await sort_both_ways(client, "/Patient", "_id") == (
        ["a-1", "b-2", "c-3"],
        ["c-3", "b-2", "a-1"],
    )


async def test_sort_by_last_updated(client: httpx.AsyncClient) -> None:
    first = await create(client, patient("First"))
    second = await create(client, patient("Second"))
    third = await create(client, patient("Third"))
    # An update makes the first the most recently changed.
    await put(client, patient("First again", id=first))
    assert await sort_both_ways(client, "/Patient", "_lastUpdated") == (
        [second, third, first],
        [first, third, second],
    )


async def test_sort_several_keys(client: httpx.AsyncClient) -> None:
    f_1980 = await create(client, patient("Zed", gender="female", birth="1980-01-01"))
    f_1990_young = await create(client, patient("Young", gender="female", birth="1990-01-01"))
    f_1990_adams = await create(client, patient("Adams", gender="female", birth="1990-01-01"))
    m_1985_brown = await create(client, patient("Brown", gender="male", birth="1985-06-15"))
    m_unborn = await create(client, patient("Able", gender="male"))
    m_1985_able = await create(client, patient("Able", gender="male", birth="1985-06-15"))
    bundle = await fetch(client, "/Patient", [("_sort", "gender,-birthdate,family")])
    assert ids(bundle) == [f_1990_adams, f_1990_young, f_1980, m_1985_able, m_1985_brown, m_unborn]
    bundle = await fetch(client, "/Patient", [("_sort", "-gender,family,birthdate")])
    assert ids(bundle) == [m_1985_able, m_unborn, m_1985_brown, f_1990_adams, f_1990_young, f_1980]


async def test_sort_by_unknown_parameter_is_refused(client: httpx.AsyncClient) -> None:
    await create(client, patient("Any"))
    answer = await client.get("/Patient", params={"_sort": "no-such-param"})
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


# --- _count ----------------------------------------------------------------------------


async def test_count_default_is_20(client: httpx.AsyncClient) -> None:
    created = sorted([await create(client, patient("Many")) for _ in range(25)])
    first = await fetch(client, "/Patient")
    assert len(ids(first)) == 20
    next_url = link(first, "next")
    assert next_url is not None
    second = await fetch(client, next_url)
    assert link(second, "next") is None
    assert sorted(ids(first) + ids(second)) == created


async def test_count_smaller_page(client: httpx.AsyncClient) -> None:
    created = sorted([await create(client, patient("Few")) for _ in range(5)])
    page = await fetch(client, "/Patient", [("_count", "3")])
    assert ids(page) == created[:3]
    assert link(page, "next") is not None


async def test_count_zero_is_summary_count(client: httpx.AsyncClient) -> None:
    """search.html#count: "_count=0 ... SHALL be treated as _summary=count": the total,
    no entries, no paging links."""
    for _ in range(3):
        await create(client, patient("Zero"))
    page = await fetch(client, "/Patient", [("_count", "0")])
    assert "entry" not in page
    assert page["total"] == 3
    assert link(page, "next") is None
    counted = await fetch(client, "/Patient", [("_count", "0"), ("_total", "accurate")])
    assert "entry" not in counted
    assert counted["total"] == 3


async def test_count_above_the_maximum_is_capped_at_1000(client: httpx.AsyncClient) -> None:
    created = sorted(
        [
            await create(client, {"resourceType": "Basic", "code": {"text": "x"}})
            for _ in range(1001)
        ]
    )
    page = await fetch(client, "/Basic", [("_count", "5000")])
    assert ids(page) == created[:1000]
    next_url = link(page, "next")
    assert next_url is not None
    rest = await fetch(client, next_url)
    assert ids(rest) == created[1000:]
    assert link(rest, "next") is None


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", ""])
async def test_count_must_be_a_whole_number(client: httpx.AsyncClient, value: str) -> None:
    answer = await client.get("/Patient", params={"_count": value})
    assert answer.status_code == 400


# --- _include and _revinclude -----------------------------------------------------------


async def test_include_type_param_and_target(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Included"))
    group = await create(
        client, {"resourceType": "Group", "type": "person", "actual": True, "name": "G"}
    )
    about_person = await create(client, observation(subject=ref(f"Patient/{person}")))
    about_group = await create(client, observation(subject=ref(f"Group/{group}")))
    also_person = await create(client, observation(subject=ref(f"Patient/{person}")))
    about_nobody = await create(client, observation())

    bundle = await fetch(client, "/Observation", [("_include", "Observation:subject")])
    assert sorted(ids(bundle)) == sorted([about_person, about_group, also_person, about_nobody])
    # The patient two matches refer to is included once.
    assert sorted(keys(bundle, "include")) == sorted([f"Patient/{person}", f"Group/{group}"])

    typed = await fetch(client, "/Observation", [("_include", "Observation:subject:Patient")])
    assert sorted(ids(typed)) == sorted([about_person, about_group, also_person, about_nobody])
    assert keys(typed, "include") == [f"Patient/{person}"]

    only_group = await fetch(
        client, "/Observation", [("_id", about_group), ("_include", "Observation:subject:Patient")]
    )
    assert ids(only_group) == [about_group]
    assert keys(only_group, "include") == []


async def test_include_entries_are_marked_and_have_full_urls(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Marked"))
    obs = await create(client, observation(subject=ref(f"Patient/{person}")))
    bundle = await fetch(client, "/Observation", [("_include", "Observation:subject")])
    assert [(e["fullUrl"], e["search"]["mode"]) for e in bundle["entry"]] == [
        (f"{BASE}/Observation/{obs}", "match"),
        (f"{BASE}/Patient/{person}", "include"),
    ]
    assert bundle["entry"][1]["resource"]["name"] == [{"family": "Marked"}]


async def test_include_wildcard(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Wild"))
    doctor = await create(client, {"resourceType": "Practitioner"})
    visit = await create(client, encounter(subject=ref(f"Patient/{person}")))
    obs = await create(
        client,
        observation(
            subject=ref(f"Patient/{person}"),
            encounter=ref(f"Encounter/{visit}"),
            performer=[ref(f"Practitioner/{doctor}"), ref(f"Patient/{person}")],
        ),
    )
    await create(client, observation(code="other"))
    expected = sorted([f"Patient/{person}", f"Practitioner/{doctor}", f"Encounter/{visit}"])
    for value in ("*", "Observation:*"):
        bundle = await fetch(client, "/Observation", [("_id", obs), ("_include", value)])
        assert ids(bundle) == [obs]
        assert sorted(keys(bundle, "include")) == expected, value


async def test_include_iterate_follows_included_resources(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Iterated"))
    visit = await create(client, encounter(subject=ref(f"Patient/{person}")))
    obs = await create(client, observation(encounter=ref(f"Encounter/{visit}")))
    iterated = await fetch(
        client,
        "/Observation",
        [("_include", "Observation:encounter"), ("_include:iterate", "Encounter:subject")],
    )
    assert ids(iterated) == [obs]
    assert sorted(keys(iterated, "include")) == sorted([f"Encounter/{visit}", f"Patient/{person}"])
    # Without :iterate an include applies to the matches only, none of which is an Encounter.
    flat = await fetch(
        client,
        "/Observation",
        [("_include", "Observation:encounter"), ("_include", "Encounter:subject")],
    )
    assert ids(flat) == [obs]
    assert keys(flat, "include") == [f"Encounter/{visit}"]


async def test_include_iterate_medication_request(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Medicated"))
    maker = await create(client, {"resourceType": "Organization", "name": "Pharma"})
    drug = await create(
        client, {"resourceType": "Medication", "manufacturer": ref(f"Organization/{maker}")}
    )
    prescribed = await create(
        client,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationReference": ref(f"Medication/{drug}"),
            "subject": ref(f"Patient/{person}"),
        },
    )
    coded = await create(
        client,
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "aspirin"},
            "subject": ref(f"Patient/{person}"),
        },
    )
    bundle = await fetch(
        client,
        "/MedicationRequest",
        [
            ("_include", "MedicationRequest:medication"),
            ("_include:iterate", "Medication:manufacturer"),
        ],
    )
    assert sorted(ids(bundle)) == sorted([prescribed, coded])
    assert sorted(keys(bundle, "include")) == sorted(
        [f"Medication/{drug}", f"Organization/{maker}"]
    )
    no_iterate = await fetch(
        client, "/MedicationRequest", [("_include", "MedicationRequest:medication")]
    )
    assert keys(no_iterate, "include") == [f"Medication/{drug}"]


async def test_include_iterate_within_one_type(client: httpx.AsyncClient) -> None:
    await put(client, patient("Third", id="p3"))
    await put(
        client, patient("Second", id="p2", link=[{"other": ref("Patient/p3"), "type": "seealso"}])
    )
    await put(
        client, patient("First", id="p1", link=[{"other": ref("Patient/p2"), "type": "seealso"}])
    )
    iterated = await fetch(
        client, "/Patient", [("_id", "p1"), ("_include:iterate", "Patient:link")]
    )
    assert ids(iterated) == ["p1"]
    assert ids(iterated, "include") == ["p2", "p3"]
    once = await fetch(client, "/Patient", [("_id", "p1"), ("_include", "Patient:link")])
    assert ids(once, "include") == ["p2"]


async def test_revinclude(client: httpx.AsyncClient) -> None:
    alice = await create(client, patient("Alice"))
    bob = await create(client, patient("Bob"))
    first = await create(client, observation(subject=ref(f"Patient/{alice}")))
    second = await create(client, observation(subject=ref(f"Patient/{alice}")))
    await create(client, observation(subject=ref(f"Patient/{bob}")))
    gone = await create(client, observation(subject=ref(f"Patient/{alice}")))
    await delete(client, f"Observation/{gone}")
    await create(client, {"resourceType": "Basic", "code": {"text": "x"}})

    bundle = await fetch(
        client, "/Patient", [("_id", alice), ("_revinclude", "Observation:subject")]
    )
    assert ids(bundle) == [alice]
    assert sorted(keys(bundle, "include")) == sorted(
        [f"Observation/{first}", f"Observation/{second}"]
    )
    assert all(e["search"]["mode"] == "include" for e in entries(bundle, "include"))


async def test_revinclude_iterate(client: httpx.AsyncClient) -> None:
    alice = await create(client, patient("Alice"))
    obs = await create(client, observation(subject=ref(f"Patient/{alice}")))
    provenance = await create(
        client,
        {
            "resourceType": "Provenance",
            "target": [ref(f"Observation/{obs}")],
            "recorded": "2020-01-01T00:00:00Z",
            "agent": [{"who": {"display": "someone"}}],
        },
    )
    bundle = await fetch(
        client,
        "/Patient",
        [
            ("_id", alice),
            ("_revinclude", "Observation:subject"),
            ("_revinclude:iterate", "Provenance:target"),
        ],
    )
    assert ids(bundle) == [alice]
    assert sorted(keys(bundle, "include")) == sorted(
        [f"Observation/{obs}", f"Provenance/{provenance}"]
    )


async def test_no_duplicates_between_matches_and_includes(client: httpx.AsyncClient) -> None:
    second = await create(client, patient("Linked"))
    first = await create(
        client,
        patient("Linking", link=[{"other": ref(f"Patient/{second}"), "type": "seealso"}]),
    )
    both = await fetch(client, "/Patient", [("_include", "Patient:link")])
    assert sorted(ids(both)) == sorted([first, second])
    assert keys(both, "include") == []
    assert len(both["entry"]) == 2
    one = await fetch(client, "/Patient", [("_id", first), ("_include", "Patient:link")])
    assert ids(one) == [first]
    assert keys(one, "include") == [f"Patient/{second}"]
    # Referred to twice (subject and performer) by two matches: included once.
    await create(
        client,
        observation(subject=ref(f"Patient/{first}"), performer=[ref(f"Patient/{first}")]),
    )
    await create(client, observation(subject=ref(f"Patient/{first}")))
    observations = await fetch(client, "/Observation", [("_include", "*")])
    assert len(ids(observations)) == 2
    assert keys(observations, "include") == [f"Patient/{first}"]


async def test_include_skips_deleted_targets(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Deleted"))
    obs = await create(client, observation(subject=ref(f"Patient/{person}")))
    await delete(client, f"Patient/{person}")
    bundle = await fetch(client, "/Observation", [("_include", "Observation:subject")])
    assert ids(bundle) == [obs]
    assert keys(bundle, "include") == []


@pytest.mark.parametrize(
    "name, value",
    [
        ("_include", "Observation:code"),
        ("_include", "NoSuchType:subject"),
        ("_include", "Observation"),
        ("_revinclude", "Observation:subject:NoSuchType"),
    ],
)
async def test_invalid_include_is_refused(client: httpx.AsyncClient, name: str, value: str) -> None:
    answer = await client.get("/Observation", params={name: value})
    assert answer.status_code == 400
    assert answer.json()["resourceType"] == "OperationOutcome"


# --- _summary and _elements -------------------------------------------------------------


def _full_patient() -> dict[str, Any]:
    return patient(
        "Summary",
        gender="female",
        text=NARRATIVE,
        maritalStatus={"text": "married"},
        contact=[{"name": {"family": "Kin"}}],
    )


async def test_summary_modes(client: httpx.AsyncClient) -> None:
    pid = await create(client, _full_patient())
    await create(client, patient("Other"))
    criteria = [("family", "Summary")]

    for mode, elements, subsetted in (
        ("true", {"name", "gender"}, True),
        ("text", {"text"}, True),
        ("data", {"name", "gender", "maritalStatus", "contact"}, True),
        ("false", {"text", "name", "gender", "maritalStatus", "contact"}, False),
    ):
        resource = await the_match(client, "/Patient", [*criteria, ("_summary", mode)])
        assert resource["id"] == pid, mode
        assert set(resource) == {"resourceType", "id", "meta", *elements}, mode
        assert (SUBSETTED in tags(resource)) is subsetted, mode


async def test_summary_count_returns_total_and_no_entries(client: httpx.AsyncClient) -> None:
    person = await create(client, patient("Counted"))
    await create(client, patient("Counted"))
    await create(client, patient("Uncounted"))
    await create(client, observation(subject=ref(f"Patient/{person}")))
    bundle = await fetch(
        client,
        "/Patient",
        [("family", "Counted"), ("_summary", "count"), ("_revinclude", "Observation:subject")],
    )
    assert bundle["total"] == 2
    assert "entry" not in bundle
    assert link(bundle, "next") is None


async def test_summary_text_keeps_mandatory_elements(client: httpx.AsyncClient) -> None:
    """search.html#summary: `text` is the text, id, meta and top-level mandatory elements:
    Observation.status (1..1) and Observation.code (1..1)."""
    obs = await create(client, observation(text=NARRATIVE, issued="2020-01-01T00:00:00Z"))
    resource = await the_match(client, "/Observation", [("_summary", "text")])
    assert resource["id"] == obs
    assert set(resource) == {"resourceType", "id", "meta", "text", "status", "code"}
    assert SUBSETTED in tags(resource)


async def test_invalid_summary_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/Patient", params={"_summary": "some"})).status_code == 400


async def test_elements_subsets_and_tags(client: httpx.AsyncClient) -> None:
    pid = await create(client, _full_patient())
    resource = await the_match(client, "/Patient", [("_elements", "name,maritalStatus")])
    assert resource["id"] == pid
    assert set(resource) == {"resourceType", "id", "meta", "name", "maritalStatus"}
    assert resource["name"] == [{"family": "Summary"}]
    assert SUBSETTED in tags(resource)


async def test_elements_keeps_mandatory_elements(client: httpx.AsyncClient) -> None:
    """search.html#elements: servers SHOULD always return mandatory elements
    (Observation.status and Observation.code are 1..1)."""
    person = await create(client, patient("Elements"))
    await create(
        client, observation(subject=ref(f"Patient/{person}"), issued="2020-01-01T00:00:00Z")
    )
    resource = await the_match(client, "/Observation", [("_elements", "subject")])
    assert set(resource) == {"resourceType", "id", "meta", "subject", "status", "code"}
    assert SUBSETTED in tags(resource)


# --- _total ----------------------------------------------------------------------------


async def test_total_modes(client: httpx.AsyncClient) -> None:
    for _ in range(5):
        person = await create(client, patient("Totalled"))
    await create(client, patient("Other"))
    await create(client, observation(subject=ref(f"Patient/{person}")))
    criteria = [("family", "Totalled"), ("_count", "2")]

    accurate = await fetch(client, "/Patient", [*criteria, ("_total", "accurate")])
    assert accurate["total"] == 5
    assert len(ids(accurate)) == 2
    # Every page gives the total of the whole search.
    next_url = link(accurate, "next")
    assert next_url is not None
    assert (await fetch(client, next_url))["total"] == 5
    # With 5 matches any estimate worth the name is exact.
    estimate = await fetch(client, "/Patient", [*criteria, ("_total", "estimate")])
    assert estimate["total"] == 5
    # `none`: no need to count; a total given anyway must still be right.
    none = await fetch(client, "/Patient", [*criteria, ("_total", "none")])
    assert none.get("total") in (None, 5)
    # The total counts matches, never included resources.
    with_includes = await fetch(
        client,
        "/Patient",
        [("family", "Totalled"), ("_total", "accurate"), ("_revinclude", "Observation:subject")],
    )
    assert with_includes["total"] == 5
    assert len(ids(with_includes)) == 5
    assert len(ids(with_includes, "include")) == 1


async def test_invalid_total_is_refused(client: httpx.AsyncClient) -> None:
    assert (await client.get("/Patient", params={"_total": "exact"})).status_code == 400


# --- Bundle shape and links --------------------------------------------------------------


async def test_searchset_bundle_shape_and_links(client: httpx.AsyncClient) -> None:
    created = sorted([await create(client, patient("Shape")) for _ in range(5)])
    await create(client, patient("Other"))

    first = await fetch(client, "/Patient", [("family", "Shape"), ("_count", "2")])
    assert first["type"] == "searchset"
    assert [
        (e["fullUrl"], e["resource"]["resourceType"], e["resource"]["id"], e["search"])
        for e in first["entry"]
    ] == [(f"{BASE}/Patient/{i}", "Patient", i, {"mode": "match"}) for i in created[:2]]
    self_url = link(first, "self")
    assert self_url is not None
    assert query_of(self_url) == (f"{BASE}/Patient", [("_count", "2"), ("family", "Shape")])
    assert link(first, "previous") is None
    next_url = link(first, "next")
    assert next_url is not None
    next_base, next_params = query_of(next_url)
    assert next_base == f"{BASE}/Patient"
    assert ("family", "Shape") in next_params and ("_count", "2") in next_params

    second = await fetch(client, next_url)
    assert ids(second) == created[2:4]
    assert link(second, "previous") is not None
    third_url = link(second, "next")
    assert third_url is not None
    third = await fetch(client, third_url)
    assert ids(third) == created[4:]
    assert link(third, "next") is None
    assert link(third, "previous") is not None


async def test_empty_result(client: httpx.AsyncClient) -> None:
    await create(client, patient("Someone"))
    bundle = await fetch(client, "/Patient", [("family", "Nobody")])
    assert bundle.get("entry", []) == []
    assert bundle.get("total") in (None, 0)
    assert link(bundle, "next") is None


async def test_unknown_parameter_is_ignored_and_reported(client: httpx.AsyncClient) -> None:
    smith = await create(client, patient("Smith"))
    await create(client, patient("Jones"))
    bundle = await fetch(client, "/Patient", [("family", "Smith"), ("no-such-param", "1")])
    assert ids(bundle) == [smith]
    outcomes = entries(bundle, "outcome")
    assert len(outcomes) == 1
    outcome = outcomes[0]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert len(outcome["issue"]) == 1
    assert outcome["issue"][0]["severity"] in ("warning", "information")
    assert "no-such-param" in outcome["issue"][0]["diagnostics"]
    # The ignored parameter does not filter: without it, the same match.
    lenient = await fetch(
        client,
        "/Patient",
        [("family", "Smith"), ("no-such-param", "1")],
        headers={"Prefer": "handling=lenient"},
    )
    assert ids(lenient) == [smith]


async def test_self_link_holds_only_the_parameters_used(client: httpx.AsyncClient) -> None:
    """search.html: the self link is the server's statement of the search it ran; it
    SHALL hold the parameters actually used, not an ignored one."""
    await create(client, patient("Smith"))
    bundle = await fetch(client, "/Patient", [("family", "Smith"), ("no-such-param", "1")])
    self_url = link(bundle, "self")
    assert self_url is not None
    assert query_of(self_url) == (f"{BASE}/Patient", [("family", "Smith")])


async def test_strict_handling_refuses_unknown_parameter(client: httpx.AsyncClient) -> None:
    await create(client, patient("Smith"))
    answer = await client.get(
        "/Patient",
        params={"family": "Smith", "no-such-param": "1"},
        headers={"Prefer": "handling=strict"},
    )
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "no-such-param" in outcome["issue"][0]["diagnostics"]
    # Strict with only known parameters still searches.
    bundle = await fetch(
        client, "/Patient", [("family", "Smith")], headers={"Prefer": "handling=strict"}
    )
    assert len(ids(bundle)) == 1


# --- Ways in -----------------------------------------------------------------------------

# A Patient and an Organization with the same id.
SHARED_ID = [
    patient("Shared", id="shared-1"),
    {"resourceType": "Organization", "id": "shared-1", "name": "Shared"},
]


async def test_post_type_search_with_form_body(client: httpx.AsyncClient) -> None:
    smith_f = await create(client, patient("Smith", gender="female"))
    smith_m = await create(client, patient("Smith", gender="male"))
    await create(client, patient("Jones", gender="female"))

    body_only = await post_search(client, "/Patient/_search", [("family", "Smith")])
    assert sorted(ids(body_only)) == sorted([smith_f, smith_m])
    # The URL's own parameters combine with the body's (AND).
    combined = await post_search(
        client, "/Patient/_search", [("family", "Smith")], params=[("gender", "female")]
    )
    assert ids(combined) == [smith_f]
    # Same answer as the GET.
    got = await fetch(client, "/Patient", [("family", "Smith"), ("gender", "female")])
    assert ids(got) == ids(combined)
    # The links a POST search gives can be followed with GET.
    paged = await post_search(client, "/Patient/_search", [("family", "Smith"), ("_count", "1")])
    first_url = link(paged, "self")
    assert first_url is not None
    assert query_of(first_url) == (f"{BASE}/Patient", [("_count", "1"), ("family", "Smith")])
    next_url = link(paged, "next")
    assert next_url is not None
    rest = await fetch(client, next_url)
    assert sorted(ids(paged) + ids(rest)) == sorted([smith_f, smith_m])


async def test_system_search_with_type_and_id(client: httpx.AsyncClient) -> None:
    await seed(client, SHARED_ID)
    obs = await create(client, observation())
    await create(client, observation())
    await create(client, patient("Someone"))

    typed = await fetch(client, "/", [("_type", "Patient,Observation"), ("_id", f"shared-1,{obs}")])
    assert sorted(keys(typed)) == sorted(["Patient/shared-1", f"Observation/{obs}"])
    assert {e["fullUrl"] for e in typed["entry"]} == {
        f"{BASE}/Patient/shared-1",
        f"{BASE}/Observation/{obs}",
    }
    # Without _type: every type.
    untyped = await fetch(client, "/", [("_id", "shared-1")])
    assert sorted(keys(untyped)) == ["Organization/shared-1", "Patient/shared-1"]
    only_patients = await fetch(client, "/", [("_type", "Patient"), ("_id", "shared-1")])
    assert keys(only_patients) == ["Patient/shared-1"]


async def test_system_search_self_link_keeps_type(client: httpx.AsyncClient) -> None:
    """The self link states the search that ran: without its _type it would be another
    search, over every type."""
    await seed(client, SHARED_ID)
    bundle = await fetch(client, "/", [("_type", "Patient"), ("_id", "shared-1")])
    assert keys(bundle) == ["Patient/shared-1"]
    self_url = link(bundle, "self")
    assert self_url is not None
    assert query_of(self_url) == (BASE, [("_id", "shared-1"), ("_type", "Patient")])
    assert keys(await fetch(client, self_url)) == ["Patient/shared-1"]


async def test_post_system_search(client: httpx.AsyncClient) -> None:
    await seed(client, SHARED_ID)
    obs = await create(client, observation())
    bundle = await post_search(
        client, "/_search", [("_type", "Patient,Observation"), ("_id", f"shared-1,{obs}")]
    )
    assert sorted(keys(bundle)) == sorted(["Patient/shared-1", f"Observation/{obs}"])
    mixed = await post_search(
        client, "/_search", [("_id", "shared-1")], params=[("_type", "Organization")]
    )
    assert keys(mixed) == ["Organization/shared-1"]


async def test_system_search_unknown_type_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.get("/", params={"_type": "Patient,NoSuchType"})
    assert answer.status_code == 400
