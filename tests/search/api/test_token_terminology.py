"""Token searches with the server's terminology (R4 search.html#token, #modifiers):
`:in` / `:not-in` a ValueSet canonical, expanded from the R4 definitions the server
ships, and `:below` / `:above` a code in a hierarchical CodeSystem (subsumption,
codesystem.html#hierarchy). A ValueSet or code system the server cannot expand (SNOMED
CT, LOINC, ...) is a 400 that says so."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.search.api.search_helpers import search, search_error, seeded

EVENT_STATUS = "http://hl7.org/fhir/event-status"
# completed, entered-in-error and not-done, of event-status's nine.
IMMUNIZATION_STATUS = "http://hl7.org/fhir/ValueSet/immunization-status"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def _procedure(pid: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": status,
        "subject": {"reference": "Patient/p1"},
    }


def _condition(cid: str, clinical: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": clinical}]},
        "subject": {"reference": "Patient/p1"},
    }


RESOURCES = [
    _procedure("done", "completed"),
    _procedure("skipped", "not-done"),
    _procedure("running", "in-progress"),
    _procedure("halted", "stopped"),
    *(_condition(code, code) for code in ("active", "recurrence", "relapse", "inactive")),
    _condition("remission", "remission"),
]
terminology = seeded(RESOURCES)


async def test_in_a_value_set(terminology: httpx.AsyncClient) -> None:
    got = await search(terminology, "Procedure", {"status:in": IMMUNIZATION_STATUS})
    assert got == {"done", "skipped"}


async def test_not_in_a_value_set(terminology: httpx.AsyncClient) -> None:
    got = await search(terminology, "Procedure", {"status:not-in": IMMUNIZATION_STATUS})
    assert got == {"running", "halted"}


async def test_in_matches_codings_by_system_and_code(terminology: httpx.AsyncClient) -> None:
    vs = "http://hl7.org/fhir/ValueSet/condition-clinical"
    got = await search(terminology, "Condition", {"clinical-status:in": vs})
    assert got == {"active", "recurrence", "relapse", "inactive", "remission"}


async def test_below_a_code(terminology: httpx.AsyncClient) -> None:
    got = await search(terminology, "Condition", {"clinical-status:below": f"{CLINICAL}|active"})
    assert got == {"active", "recurrence", "relapse"}
    got = await search(terminology, "Condition", {"clinical-status:below": f"{CLINICAL}|inactive"})
    assert got == {"inactive", "remission"}


async def test_above_a_code(terminology: httpx.AsyncClient) -> None:
    got = await search(
        terminology, "Condition", {"clinical-status:above": f"{CLINICAL}|recurrence"}
    )
    assert got == {"active", "recurrence"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status:in", "http://hl7.org/fhir/ValueSet/no-such-value-set"),
        # SNOMED CT based: the server cannot tell its members.
        ("status:in", "http://hl7.org/fhir/ValueSet/procedure-code"),
        ("code:below", "http://snomed.info/sct|387713003"),
        ("code:below", "387713003"),
        ("status:above", f"{EVENT_STATUS}|"),
    ],
)
async def test_what_cannot_be_expanded_is_a_clear_400(
    terminology: httpx.AsyncClient, name: str, value: str
) -> None:
    outcome = await search_error(terminology, "Procedure", {name: value}, 400)
    assert outcome["issue"][0]["expression"] == [name]
