"""Transaction Bundles over HTTP: POST [base] with Bundle.type = transaction (R4
http.html#transaction), its processing rules (http.html#trules: order of processing,
placeholder and conditional reference resolution, overlapping identities, all or nothing),
the transaction-response (http.html#transaction-response) and conditional create inside a
transaction (http.html#ccreate); references between entries follow bundle.html#references.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirserver.config import Settings
from tests.rest.bundle_helpers import SYS, entry, fhirpath_replace, patient

Dump = Callable[[], list[tuple[Any, ...]]]

# Patient identifiers: a URN system, so request.url queries hold no "://" (see
# test_request_url_queries_may_hold_url_valued_parameters for that case).
URL_SYS = "http://example.org/mrn"
ORG_SYS = "http://example.org/org-ids"
UUID = "urn:uuid:6f1c0c4e-8d3a-4b5e-9f7a-{:012d}"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The 500-entry transactions are larger than the suite's 64 KB body limit.
    return Settings(store=str(tmp_path / "fhir.sqlite"), max_body_bytes=32 * 1024 * 1024)


# --- building and sending Bundles -------------------------------------------------------


def uuid(n: int) -> str:
    return UUID.format(n)


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def transact(
    client: httpx.AsyncClient, *entries: dict[str, Any], prefer: str | None = None
) -> httpx.Response:
    headers = {"Prefer": prefer} if prefer else {}
    return await client.post("", json=bundle(*entries), headers=headers)


def organization(value: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORG_SYS, "value": value}],
        "name": f"Organization {value}",
        **extra,
    }


def observation(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, **extra}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


# --- reading answers back --------------------------------------------------------------


def response_entries(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "transaction-response"
    entries: list[dict[str, Any]] = body["entry"]
    return entries


def code(item: dict[str, Any]) -> int:
    """The HTTP code a response entry's status starts with (Bundle.entry.response.status)."""
    return int(item["response"]["status"].split()[0])


LOCATION = re.compile(r"(?:.*/)?([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/([0-9]+)$")


def located(item: dict[str, Any]) -> tuple[str, str, str]:
    """(type, id, version) from a response entry's location."""
    match = LOCATION.fullmatch(item["response"]["location"])
    assert match is not None, item["response"]["location"]
    return match.group(1), match.group(2), match.group(3)


def located_id(item: dict[str, Any]) -> str:
    return located(item)[1]


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    answer = await client.get(f"/{reference}")
    assert answer.status_code == 200, (reference, answer.text)
    resource: dict[str, Any] = answer.json()
    return resource


async def count(client: httpx.AsyncClient, query: str) -> int:
    answer = await client.get(f"/{query}", params={"_total": "accurate"})
    assert answer.status_code == 200, answer.text
    total: int = answer.json()["total"]
    return total


def references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value["reference"]
        for child in value.values():
            yield from references(child)
    elif isinstance(value, list):
        for child in value:
            yield from references(child)


def assert_refused(answer: httpx.Response, *statuses: int, entry_index: int | None = None) -> None:
    """A refused transaction: one of `statuses`, with an OperationOutcome that names the
    entry at fault when `entry_index` is given."""
    assert answer.status_code in statuses, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"]
    if entry_index is not None:
        where = f"Bundle.entry[{entry_index}]"
        named = [
            issue
            for issue in outcome["issue"]
            if where in issue.get("diagnostics", "")
            or any(e == where or e.startswith(where + ".") for e in issue.get("expression", []))
        ]
        assert named, (where, outcome)


def placeholders_in(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    found = []
    for row in rows:
        for cell in row:
            text = cell.decode() if isinstance(cell, bytes) else str(cell)
            if "urn:uuid:" in text or "urn:oid:" in text:
                found.append(row)
                break
    return found


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    answer = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert answer.status_code in (200, 201), answer.text
    stored: dict[str, Any] = answer.json()
    return stored


# --- 1. placeholders ------------------------------------------------------------------


async def test_placeholders_are_rewritten_everywhere_references_live(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    patient_url, practitioner_url, encounter_url = uuid(1), uuid(2), uuid(3)
    org_oid = "urn:oid:1.2.840.10008.99.7"
    elsewhere = "http://other.example/fhir/Patient/abc"
    narrative = (
        '<div xmlns="http://www.w3.org/1999/xhtml">Weight of '
        f'<a href="{patient_url}">the patient</a></div>'
    )
    answer = await transact(
        client,
        entry("POST", "Organization", organization("clinic"), org_oid),
        entry(
            "POST",
            "Patient",
            patient("P1", managingOrganization=ref(org_oid)),
            patient_url,
        ),
        entry("POST", "Practitioner", {"resourceType": "Practitioner"}, practitioner_url),
        entry(
            "POST",
            "Encounter",
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": ref(patient_url),
                "participant": [{"individual": ref(practitioner_url)}],
                "serviceProvider": ref(org_oid),
            },
            encounter_url,
        ),
        entry(
            "POST",
            "Observation",
            observation(
                text={"status": "generated", "div": narrative},
                contained=[
                    {
                        "resourceType": "PractitionerRole",
                        "id": "role",
                        "practitioner": ref(practitioner_url),
                        "organization": ref(org_oid),
                    }
                ],
                extension=[
                    {
                        "url": "http://example.org/fhir/StructureDefinition/verified-by",
                        "valueReference": ref(practitioner_url),
                    }
                ],
                subject=ref(patient_url),
                encounter=ref(encounter_url),
                performer=[ref("#role")],
            ),
            uuid(4),
        ),
        entry("POST", "Patient", patient("ABC"), elsewhere),
        entry(
            "POST",
            "Observation",
            observation(subject=ref("Patient/abc"), focus=[ref(elsewhere)]),
            "http://other.example/fhir/Observation/o1",
        ),
    )
    items = response_entries(answer)
    assert [code(item) for item in items] == [201] * 7
    org, pat, pract, enc, obs, abc, obs2 = (located_id(item) for item in items)

    assert (await read(client, f"Patient/{pat}"))["managingOrganization"] == ref(
        f"Organization/{org}"
    )
    encounter = await read(client, f"Encounter/{enc}")
    assert encounter["subject"] == ref(f"Patient/{pat}")
    assert encounter["participant"][0]["individual"] == ref(f"Practitioner/{pract}")
    assert encounter["serviceProvider"] == ref(f"Organization/{org}")

    stored = await read(client, f"Observation/{obs}")
    assert stored["subject"] == ref(f"Patient/{pat}")
    assert stored["encounter"] == ref(f"Encounter/{enc}")
    assert stored["extension"][0]["valueReference"] == ref(f"Practitioner/{pract}")
    assert stored["contained"][0]["practitioner"] == ref(f"Practitioner/{pract}")
    assert stored["contained"][0]["organization"] == ref(f"Organization/{org}")
    assert stored["performer"] == [ref("#role")], "a local reference is left alone"
    div = stored["text"]["div"]
    assert re.search(rf'href="(?:[^"]*/)?Patient/{re.escape(pat)}"', div), div

    other = await read(client, f"Observation/{obs2}")
    assert other["subject"] == ref(f"Patient/{abc}")
    assert other["focus"] == [ref(f"Patient/{abc}")]

    # Every reference now resolves to a stored resource, and no placeholder survives.
    for reference in ("Organization/" + org, "Patient/" + pat, "Encounter/" + enc):
        for target in references(await read(client, reference)):
            await read(client, target)
    for resource in (stored, other):
        for target in references(resource):
            if not target.startswith("#"):
                await read(client, target)
    assert placeholders_in(dump()) == []


async def test_placeholders_in_uri_elements_and_narrative_links_are_rewritten(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    """http.html#trules: "Servers SHALL replace all matching links in the bundle, whether
    they are found in the resource ids, resource references, elements of type uri, url, oid,
    uuid, and <a href="" & <img src="" in the narrative" - not only Reference.reference."""
    binary_url, patient_url = uuid(11), uuid(12)
    elsewhere = "http://other.example/fhir/Patient/doc2"
    narrative = (
        '<div xmlns="http://www.w3.org/1999/xhtml"><a href="'
        + patient_url
        + '">Patient</a> <img src="'
        + binary_url
        + '"/> <a href="'
        + elsewhere
        + '">Other</a></div>'
    )
    answer = await transact(
        client,
        entry(
            "POST",
            "Binary",
            {
                "resourceType": "Binary",
                "contentType": "text/plain",
                "data": base64.b64encode(b"scanned letter").decode(),
            },
            binary_url,
        ),
        entry("POST", "Patient", patient("DOC"), patient_url),
        entry("POST", "Patient", patient("DOC2"), elsewhere),
        entry(
            "POST",
            "DocumentReference",
            {
                "resourceType": "DocumentReference",
                "status": "current",
                "text": {"status": "generated", "div": narrative},
                "content": [{"attachment": {"contentType": "text/plain", "url": binary_url}}],
            },
        ),
    )
    items = response_entries(answer)
    binary, pat, pat2, doc = (located_id(item) for item in items)
    stored = await read(client, f"DocumentReference/{doc}")
    assert stored["content"][0]["attachment"]["url"].endswith(f"Binary/{binary}")
    div = stored["text"]["div"]
    assert re.search(rf'href="(?:[^"]*/)?Patient/{re.escape(pat)}"', div), div
    assert re.search(rf'src="(?:[^"]*/)?Binary/{re.escape(binary)}"', div), div
    assert re.search(rf'href="(?:[^"]*/)?Patient/{re.escape(pat2)}"', div), div
    assert placeholders_in(dump()) == []


async def test_a_put_entry_fullurl_becomes_its_id(client: httpx.AsyncClient) -> None:
    answer = await transact(
        client,
        entry("PUT", "Patient/known", patient("KNOWN", id="known"), uuid(13)),
        entry("POST", "Observation", observation(subject=ref(uuid(13)))),
    )
    put_item, posted = response_entries(answer)
    assert located(put_item)[:2] == ("Patient", "known")
    stored = await read(client, f"Observation/{located_id(posted)}")
    assert stored["subject"] == ref("Patient/known")


# --- 2. conditional references ----------------------------------------------------------


@pytest.fixture
async def organizations(client: httpx.AsyncClient) -> None:
    await put(client, organization("one", id="org-one"))
    await put(client, organization("two", id="org-two-a"))
    await put(client, organization("two", id="org-two-b"))


async def test_conditional_reference_with_one_match_resolves_to_it(
    client: httpx.AsyncClient, organizations: None
) -> None:
    answer = await transact(
        client,
        entry(
            "POST",
            "Patient",
            patient("CR1", managingOrganization=ref(f"Organization?identifier={ORG_SYS}|one")),
        ),
    )
    (item,) = response_entries(answer)
    stored = await read(client, f"Patient/{located_id(item)}")
    assert stored["managingOrganization"] == ref("Organization/org-one")


@pytest.mark.parametrize(
    ("criteria", "status"),
    [(f"identifier={ORG_SYS}|none", 400), (f"identifier={ORG_SYS}|two", 412)],
    ids=["no-match", "two-matches"],
)
async def test_conditional_reference_without_a_single_match_fails_the_transaction(
    client: httpx.AsyncClient, organizations: None, dump: Dump, criteria: str, status: int
) -> None:
    before = dump()
    answer = await transact(
        client,
        entry("POST", "Patient", patient("CR2"), uuid(21)),
        entry(
            "POST",
            "Patient",
            patient("CR3", managingOrganization=ref(f"Organization?{criteria}")),
        ),
    )
    assert_refused(answer, status, entry_index=1)
    assert dump() == before


async def test_conditional_reference_matches_a_create_earlier_in_the_bundle(
    client: httpx.AsyncClient, organizations: None
) -> None:
    answer = await transact(
        client,
        entry("POST", "Organization", organization("fresh"), uuid(22)),
        entry(
            "POST",
            "Patient",
            patient("CR4", managingOrganization=ref(f"Organization?identifier={ORG_SYS}|fresh")),
        ),
    )
    created_org, created_patient = response_entries(answer)
    stored = await read(client, f"Patient/{located_id(created_patient)}")
    assert stored["managingOrganization"] == ref(f"Organization/{located_id(created_org)}")
    await read(client, stored["managingOrganization"]["reference"])


# --- 3 and 4. ifNoneExist ---------------------------------------------------------------


async def test_if_none_exist_with_a_stored_match_creates_nothing(
    client: httpx.AsyncClient,
) -> None:
    await put(client, organization("x", id="org-x"))
    answer = await transact(
        client,
        entry(
            "POST",
            "Organization",
            organization("x"),
            uuid(31),
            ifNoneExist=f"identifier={ORG_SYS}|x",
        ),
        entry("POST", "Patient", patient("INE1", managingOrganization=ref(uuid(31)))),
    )
    matched, created = response_entries(answer)
    assert matched["response"]["status"].startswith("200")
    assert located(matched)[:2] == ("Organization", "org-x")
    assert await count(client, "Organization") == 1
    stored = await read(client, f"Patient/{located_id(created)}")
    assert stored["managingOrganization"] == ref("Organization/org-x")


async def test_two_conditional_creates_of_one_thing_in_one_bundle_make_one(
    client: httpx.AsyncClient,
) -> None:
    criteria = f"identifier={ORG_SYS}|dup"
    answer = await transact(
        client,
        entry("POST", "Organization", organization("dup"), uuid(32), ifNoneExist=criteria),
        entry("POST", "Organization", organization("dup"), uuid(33), ifNoneExist=criteria),
        entry(
            "POST",
            "Patient",
            patient(
                "INE2",
                managingOrganization=ref(uuid(32)),
                generalPractitioner=[ref(uuid(33))],
            ),
        ),
    )
    first, second, created = response_entries(answer)
    assert await count(client, f"Organization?{criteria}") == 1
    assert await count(client, "Organization") == 1
    org = located_id(first)
    assert located_id(second) == org
    assert sorted([code(first), code(second)]) == [200, 201]
    stored = await read(client, f"Patient/{located_id(created)}")
    assert stored["managingOrganization"] == ref(f"Organization/{org}")
    assert stored["generalPractitioner"] == [ref(f"Organization/{org}")]


async def test_concurrent_transactions_racing_on_one_identifier_make_one(
    client: httpx.AsyncClient,
) -> None:
    criteria = f"identifier={ORG_SYS}|race"

    def racer(n: int) -> dict[str, Any]:
        return bundle(
            entry("POST", "Organization", organization("race"), uuid(40), ifNoneExist=criteria),
            entry("POST", "Patient", patient(f"RACE{n}", managingOrganization=ref(uuid(40)))),
        )

    answers = await asyncio.gather(*(client.post("", json=racer(n)) for n in range(8)))
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert await count(client, "Organization") == 1
    orgs = {located_id(response_entries(a)[0]) for a in answers}
    assert len(orgs) == 1
    assert sorted(code(response_entries(a)[0]) for a in answers) == [200] * 7 + [201]
    assert await count(client, f"Patient?organization=Organization/{orgs.pop()}") == 8


# --- 5. all or nothing ----------------------------------------------------------------


@pytest.mark.parametrize("failure", ["unknown-element", "stale-if-match"])
async def test_a_failing_last_entry_rolls_back_a_500_entry_transaction(
    client: httpx.AsyncClient, dump: Dump, failure: str
) -> None:
    await put(client, patient("PRE", id="pre"))
    await put(client, patient("PRE", id="pre", gender="male"))  # now at version 2
    before = dump()
    entries = [entry("POST", "Patient", patient(f"BULK{n}"), uuid(1000 + n)) for n in range(499)]
    if failure == "unknown-element":
        entries.append(entry("POST", "Patient", patient("BAD", favouriteColour="blue")))
    else:
        entries.append(
            entry("PUT", "Patient/pre", patient("PRE", id="pre"), ifMatch='W/"1"'),
        )
    answer = await transact(client, *entries)
    assert_refused(answer, 400, 412, 422, entry_index=499)
    assert dump() == before
    assert await count(client, "Patient") == 1


async def test_a_failing_read_processed_after_the_writes_rolls_them_back(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    await put(client, patient("KEEP", id="keep"))
    before = dump()
    answer = await transact(
        client,
        entry("POST", "Patient", patient("RB1")),
        entry("GET", "Patient/missing"),
        entry("PUT", "Patient/keep", patient("KEEP", id="keep", gender="other")),
        entry("DELETE", "Patient/keep-not"),
    )
    assert_refused(answer, 400, 404, entry_index=1)
    assert dump() == before


# --- 6. overlapping identities and unresolvable placeholders ----------------------------


OVERLAPS = {
    "two-puts": [
        entry("PUT", "Patient/x", patient("X1", id="x")),
        entry("PUT", "Patient/x", patient("X2", id="x")),
    ],
    "delete-and-put": [
        entry("DELETE", "Patient/ov"),
        entry("PUT", "Patient/ov", patient("OV", id="ov")),
    ],
    "conditional-put-and-delete": [
        entry("PUT", f"Patient?identifier={SYS}|OV", patient("OV", gender="female")),
        entry("DELETE", "Patient/ov"),
    ],
    "put-and-patch": [
        entry("PUT", "Patient/ov", patient("OV", id="ov")),
        entry(
            "PATCH",
            "Patient/ov",
            {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": base64.b64encode(
                    json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()
                ).decode(),
            },
        ),
    ],
    "unresolved-placeholder": [
        entry("POST", "Patient", patient("UP1"), uuid(60)),
        entry("POST", "Observation", observation(subject=ref(uuid(61)))),
    ],
}


@pytest.mark.parametrize("case", OVERLAPS)
async def test_overlaps_and_dangling_placeholders_are_refused(
    client: httpx.AsyncClient, dump: Dump, case: str
) -> None:
    await put(client, patient("OV", id="ov"))
    before = dump()
    answer = await transact(client, *OVERLAPS[case])
    # Each case's second entry is at fault (the overlap names both entries).
    assert_refused(answer, 400, entry_index=1)
    assert dump() == before
    assert (await read(client, "Patient/ov"))["meta"]["versionId"] == "1"


# --- 7. processing order ----------------------------------------------------------------


async def test_reads_run_after_the_writes_they_precede_in_the_bundle(
    client: httpx.AsyncClient,
) -> None:
    answer = await transact(
        client,
        entry("GET", f"Patient?identifier={SYS}|ORDER"),
        entry("POST", "Patient", patient("ORDER")),
    )
    found, created = response_entries(answer)
    assert found["resource"]["type"] == "searchset"
    ids = [e["resource"]["id"] for e in found["resource"].get("entry", [])]
    assert ids == [located_id(created)]


async def test_deletes_run_before_the_creates_they_follow_in_the_bundle(
    client: httpx.AsyncClient,
) -> None:
    """POST then DELETE Patient?identifier=Y, with Patient/old holding Y: run in listed
    order the delete would match two patients (412); run DELETE first it removes old."""
    await put(client, patient("Y", id="old"))
    answer = await transact(
        client,
        entry("POST", "Patient", patient("Y")),
        entry("DELETE", f"Patient?identifier={SYS}|Y"),
    )
    created, deleted = response_entries(answer)
    assert code(created) == 201
    assert code(deleted) in (200, 204)
    assert (await client.get("/Patient/old")).status_code == 410
    search = (await client.get("/Patient", params={"identifier": f"{SYS}|Y"})).json()
    assert [e["resource"]["id"] for e in search["entry"]] == [located_id(created)]


async def test_if_none_exist_does_not_match_a_resource_the_bundle_deletes(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    """DELETE runs before POST (http.html#trules), so a conditional create listed before the
    delete of its only match must not answer with the deleted resource. Creating anew, or
    refusing the transaction as overlapping, are both consistent with the rules."""
    await put(client, patient("Z", id="old-z"))
    before = dump()
    answer = await transact(
        client,
        entry("POST", "Patient", patient("Z"), ifNoneExist=f"identifier={SYS}|Z"),
        entry("DELETE", "Patient/old-z"),
    )
    if answer.status_code != 200:
        assert_refused(answer, 400, 409, 412)
        assert dump() == before
        return
    created, _ = response_entries(answer)
    assert located_id(created) != "old-z", "the POST answered with the resource it deleted"
    assert code(created) == 201
    await read(client, f"Patient/{located_id(created)}")
    assert await count(client, f"Patient?identifier={SYS}|Z") == 1


# --- 8. conditional and versioned writes, patches ---------------------------------------


async def test_if_match_on_put_entries(client: httpx.AsyncClient, dump: Dump) -> None:
    await put(client, patient("IM", id="im"))
    answer = await transact(
        client, entry("PUT", "Patient/im", patient("IM", id="im", gender="male"), ifMatch='W/"1"')
    )
    (item,) = response_entries(answer)
    assert code(item) == 200
    assert item["response"]["etag"] == 'W/"2"'
    assert (await read(client, "Patient/im"))["gender"] == "male"

    before = dump()
    stale = await transact(
        client,
        entry("POST", "Patient", patient("IM-NEW")),
        entry("PUT", "Patient/im", patient("IM", id="im", gender="female"), ifMatch='W/"1"'),
    )
    assert_refused(stale, 412, entry_index=1)
    assert dump() == before


async def test_conditional_update_by_url(client: httpx.AsyncClient) -> None:
    await put(client, patient("CU", id="cu"))
    answer = await transact(
        client,
        entry("PUT", f"Patient?identifier={SYS}|CU", patient("CU", gender="female")),
        entry("PUT", f"Patient?identifier={SYS}|CU-NEW", patient("CU-NEW")),
    )
    updated, created = response_entries(answer)
    assert code(updated) == 200
    assert located(updated) == ("Patient", "cu", "2")
    assert (await read(client, "Patient/cu"))["gender"] == "female"
    assert code(created) == 201
    new = await read(client, f"Patient/{located_id(created)}")
    assert new["identifier"][0]["value"] == "CU-NEW"
    assert await count(client, "Patient") == 2


async def test_conditional_delete_by_url(client: httpx.AsyncClient) -> None:
    await put(client, patient("CD", id="cd"))
    await put(client, patient("CD-OTHER", id="cd-other"))
    answer = await transact(client, entry("DELETE", f"Patient?identifier={SYS}|CD"))
    (item,) = response_entries(answer)
    assert code(item) in (200, 204)
    assert (await client.get("/Patient/cd")).status_code == 410
    await read(client, "Patient/cd-other")


def json_patch_binary(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(operations).encode()).decode(),
    }


async def test_patch_entry_with_a_json_patch_binary(client: httpx.AsyncClient) -> None:
    await put(client, patient("JP", id="jp", gender="male"))
    answer = await transact(
        client,
        entry(
            "PATCH",
            "Patient/jp",
            json_patch_binary([{"op": "replace", "path": "/gender", "value": "female"}]),
        ),
    )
    (item,) = response_entries(answer)
    assert code(item) == 200
    assert located(item) == ("Patient", "jp", "2")
    stored = await read(client, "Patient/jp")
    assert stored["gender"] == "female"
    assert stored["identifier"][0]["value"] == "JP"


async def test_patch_entry_with_a_fhirpath_patch(client: httpx.AsyncClient) -> None:
    await put(client, patient("FP", id="fp", birthDate="1970-01-01"))
    parameters = fhirpath_replace("Patient.birthDate", valueDate="1990-05-17")
    answer = await transact(client, entry("PATCH", "Patient/fp", parameters))
    (item,) = response_entries(answer)
    assert code(item) == 200
    assert item["response"]["etag"] == 'W/"2"'
    assert (await read(client, "Patient/fp"))["birthDate"] == "1990-05-17"


async def test_a_fhirpath_patch_may_reference_a_resource_created_in_the_bundle(
    client: httpx.AsyncClient, dump: Dump
) -> None:
    """The placeholder in the patch's valueReference is a link in the Bundle like any
    other (http.html#trules): it is stored as the new Organization's id."""
    await put(client, organization("old", id="org-old"))
    await put(client, patient("FP2", id="fp2", managingOrganization=ref("Organization/org-old")))
    parameters = fhirpath_replace("Patient.managingOrganization", valueReference=ref(uuid(80)))
    answer = await transact(
        client,
        entry("POST", "Organization", organization("new"), uuid(80)),
        entry("PATCH", "Patient/fp2", parameters),
    )
    created, patched = response_entries(answer)
    assert code(patched) == 200
    stored = await read(client, "Patient/fp2")
    assert stored["managingOrganization"] == ref(f"Organization/{located_id(created)}")
    assert placeholders_in(dump()) == []


async def test_a_patch_that_cannot_apply_rolls_back(client: httpx.AsyncClient, dump: Dump) -> None:
    await put(client, patient("JP2", id="jp2"))
    before = dump()
    answer = await transact(
        client,
        entry("POST", "Patient", patient("JP2-NEW")),
        entry(
            "PATCH",
            "Patient/jp2",
            json_patch_binary([{"op": "remove", "path": "/telecom/0"}]),
        ),
    )
    assert_refused(answer, 400, 422, entry_index=1)
    assert dump() == before


# --- 9. the transaction-response ------------------------------------------------------


@pytest.fixture
async def response_fixtures(client: httpx.AsyncClient) -> None:
    await put(client, patient("R", id="r-read"))
    await put(client, patient("R", id="r-read", gender="female"))
    await put(client, patient("R-DEL", id="r-del"))


def mixed_bundle() -> list[dict[str, Any]]:
    return [
        entry("GET", "Patient/r-read"),
        entry("POST", "Patient", patient("R-POST"), uuid(90)),
        entry("PUT", "Patient/r-new", patient("R-PUT", id="r-new")),
        entry("DELETE", "Patient/r-del"),
        entry("GET", f"Patient?identifier={SYS}|R"),
        entry("GET", "Patient/r-read/_history"),
    ]


def instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.tzinfo is not None
    return moment


async def test_response_entries_come_in_request_order_with_their_outcomes(
    client: httpx.AsyncClient, response_fixtures: None
) -> None:
    items = response_entries(await transact(client, *mixed_bundle()))
    assert len(items) == 6
    assert [code(item) for item in items] == [200, 201, 201, 204, 200, 200]
    assert items[1]["response"]["status"].startswith("201")

    read_entry, posted, created, deleted, searched, history = items
    assert read_entry["resource"]["id"] == "r-read"
    assert read_entry["resource"]["gender"] == "female"
    assert read_entry["response"]["etag"] == 'W/"2"'

    for item, expected in ((posted, None), (created, "r-new")):
        resource_type, resource_id, version = located(item)
        assert (resource_type, version) == ("Patient", "1")
        if expected is not None:
            assert resource_id == expected
        assert item["response"]["etag"] == 'W/"1"'
        instant(item["response"]["lastModified"])
        # Default return=representation: the resource as stored.
        assert item["resource"]["id"] == resource_id
        assert item["resource"]["meta"]["versionId"] == "1"
    assert posted["resource"]["identifier"][0]["value"] == "R-POST"
    assert (await client.get("/Patient/r-del")).status_code == 410

    assert searched["resource"]["resourceType"] == "Bundle"
    assert searched["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in searched["resource"]["entry"]] == ["r-read"]
    assert history["resource"]["type"] == "history"
    assert len(history["resource"]["entry"]) == 2
    assert deleted["response"]["status"].startswith("204") or deleted["response"][
        "status"
    ].startswith("200")


async def test_prefer_return_minimal_leaves_out_written_resources(
    client: httpx.AsyncClient, response_fixtures: None
) -> None:
    items = response_entries(await transact(client, *mixed_bundle(), prefer="return=minimal"))
    assert [code(item) for item in items] == [200, 201, 201, 204, 200, 200]
    for item in items[1:4]:
        assert "resource" not in item
    assert located(items[1])[0] == "Patient"
    assert items[2]["response"]["etag"] == 'W/"1"'
    # Reads still answer with what they read.
    assert items[0]["resource"]["id"] == "r-read"
    assert items[4]["resource"]["type"] == "searchset"


async def test_prefer_return_representation_includes_written_resources(
    client: httpx.AsyncClient, response_fixtures: None
) -> None:
    answer = await transact(client, *mixed_bundle(), prefer="return=representation")
    items = response_entries(answer)
    assert items[1]["resource"]["identifier"][0]["value"] == "R-POST"
    assert items[2]["resource"]["id"] == "r-new"


async def test_prefer_return_operation_outcome_gives_each_write_an_outcome(
    client: httpx.AsyncClient, response_fixtures: None
) -> None:
    items = response_entries(
        await transact(client, *mixed_bundle(), prefer="return=OperationOutcome")
    )
    for item in items[1:4]:
        assert item["response"]["outcome"]["resourceType"] == "OperationOutcome"
        assert "resource" not in item
    assert items[0]["resource"]["id"] == "r-read"


async def test_vread_entry(client: httpx.AsyncClient, response_fixtures: None) -> None:
    items = response_entries(await transact(client, entry("GET", "Patient/r-read/_history/1")))
    assert items[0]["resource"]["meta"]["versionId"] == "1"
    assert "gender" not in items[0]["resource"]


# --- 10. bad envelopes ------------------------------------------------------------------


ENVELOPES: dict[str, Any] = {
    "not-a-bundle": patient("ENV"),
    "collection": bundle(entry("POST", "Patient", patient("ENV")), kind="collection"),
    "entry-without-request": {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"fullUrl": uuid(100), "resource": patient("ENV")}],
    },
    "unknown-method": bundle(entry("FETCH", "Patient", patient("ENV"))),
    # JSON that is not a string (a list or an object cannot be looked up as a method).
    "method-not-a-string": bundle(
        {"resource": patient("ENV"), "request": {"method": ["POST"], "url": "Patient"}}
    ),
    "post-to-instance": bundle(entry("POST", "Patient/env", patient("ENV", id="env"))),
    "url-on-another-server": bundle(
        entry("POST", "http://elsewhere.example/fhir/Patient", patient("ENV"))
    ),
    "put-without-resource": bundle(entry("PUT", "Patient/env")),
    "resource-not-of-the-url-type": bundle(entry("POST", "Observation", patient("ENV"))),
    "put-id-not-the-url-id": bundle(entry("PUT", "Patient/env", patient("ENV", id="other"))),
}


@pytest.mark.parametrize("case", ENVELOPES)
async def test_bad_envelopes_are_refused(client: httpx.AsyncClient, dump: Dump, case: str) -> None:
    await put(client, patient("ENV", id="env-kept"))
    before = dump()
    answer = await client.post("", json=ENVELOPES[case])
    assert_refused(answer, 400)
    assert dump() == before


async def test_a_body_that_is_not_json_is_refused(client: httpx.AsyncClient, dump: Dump) -> None:
    before = dump()
    answer = await client.post("", content=b'{"resourceType": "Bundle", "type": "transac')
    assert_refused(answer, 400)
    assert dump() == before


async def test_request_url_queries_may_hold_url_valued_parameters(
    client: httpx.AsyncClient,
) -> None:
    """A relative request.url whose query holds a URL (an identifier system, the common
    case) is still a URL on this server: search, conditional update and delete work."""
    await put(client, patient("U1", id="url-a", identifier=[{"system": URL_SYS, "value": "U1"}]))
    await put(client, patient("U2", id="url-b", identifier=[{"system": URL_SYS, "value": "U2"}]))
    answer = await transact(
        client,
        entry(
            "PUT",
            f"Patient?identifier={URL_SYS}|U1",
            patient("U1", id="url-a", active=True, identifier=[{"system": URL_SYS, "value": "U1"}]),
        ),
        entry("DELETE", f"Patient?identifier={URL_SYS}|U2"),
        entry("GET", f"Patient?identifier={URL_SYS}|U1"),
    )
    updated, deleted, found = response_entries(answer)
    assert located(updated) == ("Patient", "url-a", "2")
    assert code(deleted) in (200, 204)
    assert (await client.get("/Patient/url-b")).status_code == 410
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == ["url-a"]


async def test_request_url_on_this_server_is_accepted(client: httpx.AsyncClient) -> None:
    answer = await transact(client, entry("POST", "http://testserver/fhir/Patient", patient("ABS")))
    (item,) = response_entries(answer)
    assert code(item) == 201
    await read(client, f"Patient/{located_id(item)}")


async def test_a_get_entry_on_the_absolute_base_url_links_to_the_same_search(
    client: httpx.AsyncClient,
) -> None:
    """request.url may be absolute on this server (http.html#transaction); the searchset
    it answers with links to that search, not to the base path twice."""
    await put(client, patient("ABS", id="abs"))
    answer = await transact(
        client, entry("GET", f"http://testserver/fhir/Patient?identifier={SYS}|ABS")
    )
    (item,) = response_entries(answer)
    searchset = item["resource"]
    assert [e["resource"]["id"] for e in searchset["entry"]] == ["abs"]
    (self_link,) = [link["url"] for link in searchset["link"] if link["relation"] == "self"]
    assert self_link.startswith("http://testserver/fhir/Patient?")
