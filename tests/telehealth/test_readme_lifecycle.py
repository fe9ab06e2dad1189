"""The README's lifecycle table (README "Telehealth" / "Lifecycle": trigger | effect) held
to the code, so that the two cannot drift. What the table names is checked, not its prose:

- every AuditEvent it names is one the server records (`audit.SUBTYPES`), and every one
  the server records is named;
- every status it names for an Appointment or an Encounter is a status of that resource;
- the changes of status it tells, row by row from the first status it names for each
  resource (a create may use any status), are allowed by the transition tables
  (`lifecycle.py`): each status it names next is one step from one named before;
- the transitions its refused row gives ("`fulfilled` to `booked`") are refused by them;
- where a row's change of status comes with a room created, a room closed or a no-show
  check, the lifecycle's check of that change returns that effect;
- the operations, FHIRSERVER_* settings and server-owned sub-extensions it names exist.

A status that both resources have (`arrived`, `cancelled`, `entered-in-error`) must be
named with its resource ("Appointment `cancelled`"), else the test cannot tell whose it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fhirserver.config import ENV_PREFIX, Settings
from fhirserver.interactions.operations import definition, definitions
from fhirserver.telehealth.appointment_lifecycle import check_appointment
from fhirserver.telehealth.audit import SUBTYPES
from fhirserver.telehealth.encounter_lifecycle import check_encounter
from fhirserver.telehealth.lifecycle import (
    APPOINTMENT_STATUSES,
    DEFAULT_NO_SHOW_GRACE,
    ENCOUNTER_STATUSES,
    CloseVisit,
    DisposeRoom,
    Effect,
    ProvisionRoom,
    ScheduleNoShowCheck,
    allowed,
)
from fhirserver.telehealth.virtual_service import (
    SERVER_MANAGED,
    VR_CLASS,
    VirtualService,
    channel_type,
    with_virtual_service,
)

README = Path(__file__).resolve().parents[2] / "README.md"
STATUSES = {"Appointment": APPOINTMENT_STATUSES, "Encounter": ENCOUNTER_STATUSES}
REFUSED_ROW = "a transition the table does not allow"
SERVER_OWNED_ROW = "a client writes"
# "Appointment `noshow`", "Encounter becomes `finished`", "Appointment `a`, `b` or `c`".
NAMED_WITH_KIND = re.compile(
    r"\b(Appointment|Encounter)(?: becomes| created)? ((?:`[a-z-]+`(?:, | or )?)+)"
)
REFUSED_PAIR = re.compile(r"(?:\b(Appointment|Encounter) )?`([a-z-]+)` to `([a-z-]+)`")
AUDIT_EVENTS = re.compile(r"AuditEvents? ((?:`[a-z-]+`(?:, | / | or )?)+)")
TOKEN = re.compile(r"`([^`]+)`")
# The effect each phrase of an effect cell stands for, by the resource whose status changed.
EFFECT_PHRASES: dict[str, dict[str, type[Effect]]] = {
    "a room is created": {"Appointment": ProvisionRoom},
    "room is closed": {"Appointment": DisposeRoom, "Encounter": CloseVisit},
    "room closed": {"Appointment": DisposeRoom, "Encounter": CloseVisit},
    "no-show check": {"Appointment": ScheduleNoShowCheck},
}
START = datetime(2026, 12, 1, 10, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    trigger: str
    effect: str

    @property
    def text(self) -> str:
        return f"{self.trigger} | {self.effect}"


def lifecycle_rows(readme: str) -> tuple[Row, ...]:
    """The rows of the table under "## Telehealth" / "### Lifecycle"."""
    section = readme.split("\n## Telehealth\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n### Lifecycle\n", 1)[1].split("\n### ", 1)[0]
    lines = [line.strip() for line in table.splitlines() if line.strip().startswith("|")]
    header, _rule, *body = lines
    assert _cells(header) == ["trigger", "effect"]
    return tuple(Row(*_cells(line)) for line in body)


def _cells(line: str) -> list[str]:
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert len(cells) == 2, f"not a trigger | effect row: {line}"
    return cells


ROWS = lifecycle_rows(README.read_text(encoding="utf-8"))


def refused_pairs(row: Row) -> list[tuple[str, str, str]]:
    """(kind, from, to) of each "`x` to `y`" in a row; the kind, when not named, is the
    one resource both statuses belong to."""
    pairs = []
    for kind, before, after in REFUSED_PAIR.findall(row.trigger):
        if not kind:
            (kind,) = [k for k, known in STATUSES.items() if {before, after} <= set(known)]
        pairs.append((kind, before, after))
    return pairs


def named_statuses(cell: str) -> list[tuple[str, str]]:
    """(kind, status) of each status a cell names, in order."""
    cell = REFUSED_PAIR.sub("", cell)
    named: list[tuple[str, str]] = []
    for kind, listed in NAMED_WITH_KIND.findall(cell):
        for status in TOKEN.findall(listed):
            assert status in STATUSES[kind], f"README names {kind} `{status}`: no {kind} status"
            named.append((kind, status))
    for token in TOKEN.findall(NAMED_WITH_KIND.sub("", cell)):
        kinds = [kind for kind, known in STATUSES.items() if token in known]
        assert len(kinds) < 2, f"README: `{token}` is a status of both; name the resource"
        named += [(kinds[0], token)] if kinds else []
    return named


def story() -> list[tuple[Row, str, str]]:
    """(row, kind, status) of every status the table names outside its refused row."""
    return [
        (row, kind, status)
        for row in ROWS
        if not row.trigger.startswith(REFUSED_ROW)
        for cell in (row.trigger, row.effect)
        for kind, status in named_statuses(cell)
    ]


def test_the_table_is_there_with_its_refused_and_server_owned_rows() -> None:
    assert len(ROWS) >= 5
    assert any(row.trigger.startswith(REFUSED_ROW) for row in ROWS)
    assert any(row.trigger.startswith(SERVER_OWNED_ROW) for row in ROWS)


def test_the_audit_events_named_are_the_ones_the_server_records() -> None:
    named = {
        code
        for row in ROWS
        for listed in AUDIT_EVENTS.findall(row.effect)
        for code in TOKEN.findall(listed)
    }
    assert named - set(SUBTYPES) == set(), "named in the README, never recorded"
    assert set(SUBTYPES) - named == set(), "recorded, not named in the README"


def test_every_change_of_status_told_is_allowed_by_the_tables() -> None:
    reached: dict[str, set[str]] = {}
    for row, kind, status in story():
        if kind not in reached:
            reached[kind] = {status}  # its first status: a create may use any
            continue
        before = reached[kind]
        assert status in before or any(allowed(kind, b, status) for b in before), (
            f"README row {row.text!r}: {kind} goes to {status} from none of {sorted(before)}"
        )
        before.add(status)
    assert set(reached) == {"Appointment", "Encounter"}


def test_the_transitions_given_as_refused_are_refused() -> None:
    (row,) = [row for row in ROWS if row.trigger.startswith(REFUSED_ROW)]
    pairs = refused_pairs(row)
    assert pairs, "the refused row gives no `x` to `y`"
    for kind, before, after in pairs:
        assert {before, after} <= set(STATUSES[kind])
        assert not allowed(kind, before, after), f"the tables allow {kind} {before} to {after}"


def _effects(kind: str, old_status: str | None, status: str) -> tuple[Effect, ...]:
    if kind == "Appointment":
        old = _appointment(old_status) if old_status is not None else None
        return check_appointment(old, _appointment(status)).effects
    old_encounter = _encounter(old_status) if old_status is not None else None
    return check_encounter(old_encounter, _encounter(status), now=START).effects


@pytest.mark.parametrize("phrase", list(EFFECT_PHRASES))
def test_the_effects_told_are_what_the_lifecycle_returns(phrase: str) -> None:
    told = [(row, kind, status) for row, kind, status in story() if phrase in row.effect]
    first: dict[str, str] = {}
    for _row, kind, status in story():
        first.setdefault(kind, status)
    for row, kind, status in told:
        # From the resource's first status (a create when it is that status).
        old = None if status == first[kind] else first[kind]
        expected = EFFECT_PHRASES[phrase].get(kind)
        assert expected is not None, f"README row {row.text!r}: {phrase!r} of a {kind}"
        found = [e for e in _effects(kind, old, status) if isinstance(e, expected)]
        assert found, f"README row {row.text!r}: {kind} {old} -> {status} gives no {phrase}"
        if isinstance(found[0], ScheduleNoShowCheck):
            assert found[0].at == START + DEFAULT_NO_SHOW_GRACE  # "start + grace"


def test_the_operations_settings_and_server_parts_named_exist() -> None:
    tokens = [token for row in ROWS for token in TOKEN.findall(row.text)]
    codes = {str(d.get("code")) for d in definitions()}
    for token in tokens:
        for resource_type, code in re.findall(r"(?:([A-Z][A-Za-z]+)/\[id\]/)?\$([a-z-]+)", token):
            assert code in codes, f"README names ${code}: no such operation"
            if resource_type:
                definition(resource_type, code)  # NotFound if not on that type
    settings = {ENV_PREFIX + field.name.upper() for field in fields(Settings)}
    for token in tokens:
        if token.startswith(ENV_PREFIX):
            assert token in settings, f"README names {token}: no such setting"
    (row,) = [row for row in ROWS if row.trigger.startswith(SERVER_OWNED_ROW)]
    assert set(TOKEN.findall(row.trigger)) == set(SERVER_MANAGED)


def _appointment(status: str) -> dict[str, Any]:
    resource = {
        "resourceType": "Appointment",
        "id": "a1",
        "status": status,
        "start": START.isoformat(),
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
    }
    return with_virtual_service(resource, VirtualService(channel_type("jitsi")))


def _encounter(status: str) -> dict[str, Any]:
    return {"resourceType": "Encounter", "id": "e1", "status": status, "class": VR_CLASS.to_json()}
