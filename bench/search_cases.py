"""The six searches the search benchmark times, each with its floor: hand-written SQL.

A Case gives, for the n-th request, the query string parameters sent to fhirserver and
the SQL (with its arguments) that returns the same first page, and the same included
resources, straight from the SQLite file: the bodies of the matches, as (type, id, body).
The floor SQL is the best this file could do with the tables fhirserver has (schema.py):
each drives from the most selective index (idx_reference by target for a patient,
idx_token / idx_string / idx_date by value), looks the rest up by the seq of the current
version (the index tables' key), and reads `versions` only for the rows returned. Each
index access names its index (INDEXED BY), so the floor's plan does not change with the
planner's guesses; a renamed index makes the floor fail loudly rather than slow down.
Patients rotate over real patient ids from the data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhirserver.search.time import to_micros

Params = list[tuple[str, str]]
Args = dict[str, Any]

# Codes that occur often in the Synthea 2019 sample (checked by `fixture`).
SNOMED_CONDITION = "444814009"  # Viral sinusitis (disorder), ~100 Conditions
LOINC_HEIGHT = "8302-2"  # Body Height, in every patient's record
LOINC_HAS = "2339-0"  # Glucose, in part of the patients' records
LOINC = "http://loinc.org"
SINCE_2015 = to_micros(datetime(2015, 1, 1, tzinfo=UTC))
BEFORE_1950 = to_micros(datetime(1950, 1, 1, tzinfo=UTC))
# Beyond every stored string, as fhirserver bounds a prefix range.
STRING_END = "\U0010ffff"


@dataclass(frozen=True, slots=True)
class Fixture:
    """What the cases draw on from the loaded data."""

    patients: tuple[str, ...]

    def patient(self, n: int) -> str:
        return self.patients[n % len(self.patients)]


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    resource_type: str
    params: Callable[[Fixture, int], Params]
    floor_sql: str
    floor_args: Callable[[Fixture, int], Args]


class FixtureError(RuntimeError):
    """The loaded data lacks what the cases rely on."""


def fixture(connection: sqlite3.Connection) -> Fixture:
    patients = tuple(
        row[0]
        for row in connection.execute(
            "SELECT id FROM resources WHERE type = 'Patient' ORDER BY id"
        ).fetchall()
    )
    if not patients:
        raise FixtureError("the store holds no Patient")
    for code in (SNOMED_CONDITION, LOINC_HEIGHT, LOINC_HAS):
        found = connection.execute(
            "SELECT 1 FROM idx_token WHERE type IN ('Condition', 'Observation') "
            "AND param = 'code' AND code = ? LIMIT 1",
            (code,),
        ).fetchone()
        if found is None:
            raise FixtureError(f"the store holds no Condition or Observation with code {code}")
    return Fixture(patients)


# The current, non-deleted version of resources r, in id order, first page only.
_BODIES = "SELECT r.type, r.id, v.body FROM resources r JOIN versions v ON v.seq = r.seq"
# The same, started from a short list of seqs: versions by seq, then their resources
# (joined as written, so SQLite cannot walk every resource of the type in id order
# instead, testing each against the list: 4.6 s a search at 100x).
_BODIES_OF_SEQS = (
    "SELECT r.type, r.id, v.body FROM versions v"
    " CROSS JOIN resources r ON r.type = v.type AND r.id = v.id AND r.seq = v.seq"
)

OBSERVATION_BY_PATIENT = Case(
    label=f"Observation?patient=X&code={LOINC}|{LOINC_HEIGHT}&date=ge2015",
    resource_type="Observation",
    params=lambda f, n: [
        ("patient", f.patient(n)),
        ("code", f"{LOINC}|{LOINC_HEIGHT}"),
        ("date", "ge2015"),
    ],
    # The patient's Observations (a few hundred at most) from idx_reference, then each
    # checked by seq against the code and the date.
    floor_sql=f"""{_BODIES_OF_SEQS}
        WHERE r.type = 'Observation' AND v.body IS NOT NULL AND v.seq IN (
            SELECT f.seq FROM idx_reference f INDEXED BY idx_reference_by_target
            WHERE f.target_id = :patient AND f.target_type = 'Patient'
              AND f.param = 'patient' AND f.type = 'Observation'
              AND EXISTS (SELECT 1 FROM idx_token t NOT INDEXED
                          WHERE t.seq = f.seq AND t.param = 'code'
                            AND t.code = :code AND t.system = :system)
              AND EXISTS (SELECT 1 FROM idx_date d NOT INDEXED
                          WHERE d.seq = f.seq AND d.param = 'date' AND d.high > :since))
        ORDER BY r.id LIMIT 20""",
    floor_args=lambda f, n: {
        "patient": f.patient(n),
        "code": LOINC_HEIGHT,
        "system": LOINC,
        "since": SINCE_2015,
    },
)

PATIENT_BY_NAME = Case(
    label="Patient?name=smi",
    resource_type="Patient",
    params=lambda f, n: [("name", "smi")],
    floor_sql=f"""{_BODIES}
        WHERE r.type = 'Patient' AND v.body IS NOT NULL AND v.seq IN (
            SELECT s.seq FROM idx_string s INDEXED BY idx_string_by_value
            WHERE s.type = 'Patient' AND s.param = 'name' AND s.norm >= :prefix
              AND s.norm < :prefix || '{STRING_END}')
        ORDER BY r.id LIMIT 20""",
    floor_args=lambda f, n: {"prefix": "smi"},
)

ENCOUNTERS_LATEST = Case(
    label="Encounter?patient=X&_sort=-date&_count=10",
    resource_type="Encounter",
    params=lambda f, n: [("patient", f.patient(n)), ("_sort", "-date"), ("_count", "10")],
    # Sorted as fhirserver sorts: the latest end of the period first, then by id.
    floor_sql="""SELECT r.type, r.id, v.body FROM idx_reference f INDEXED BY idx_reference_by_target
        CROSS JOIN versions v ON v.seq = f.seq
        CROSS JOIN resources r ON r.type = v.type AND r.id = v.id AND r.seq = v.seq
        WHERE f.target_id = :patient AND f.target_type = 'Patient' AND f.param = 'patient'
          AND f.type = 'Encounter' AND r.type = 'Encounter' AND v.body IS NOT NULL
        ORDER BY (SELECT max(k.high) FROM idx_date k NOT INDEXED
                  WHERE k.seq = r.seq AND k.param = 'date') DESC, r.id
        LIMIT 10""",
    floor_args=lambda f, n: {"patient": f.patient(n)},
)

CONDITIONS_WITH_SUBJECT = Case(
    label=f"Condition?code={SNOMED_CONDITION}&_include=Condition:subject",
    resource_type="Condition",
    params=lambda f, n: [("code", SNOMED_CONDITION), ("_include", "Condition:subject")],
    # The page of Conditions, then the Patients its subjects name, in one statement.
    floor_sql="""
        WITH page AS (
            SELECT r.id, r.seq, v.body FROM resources r JOIN versions v ON v.seq = r.seq
            WHERE r.type = 'Condition' AND v.body IS NOT NULL AND v.seq IN (
                SELECT t.seq FROM idx_token t INDEXED BY idx_token_by_value
                WHERE t.type = 'Condition' AND t.param = 'code' AND t.code = :code)
            ORDER BY r.id LIMIT 20)
        SELECT 'Condition', id, body FROM page
        UNION ALL
        SELECT r.type, r.id, v.body FROM resources r JOIN versions v ON v.seq = r.seq
        WHERE r.type = 'Patient' AND v.body IS NOT NULL AND r.id IN (
            SELECT f.target_id
            FROM page p CROSS JOIN idx_reference f NOT INDEXED
            WHERE f.seq = p.seq AND f.param = 'subject'
              AND f.target_type = 'Patient')""",
    floor_args=lambda f, n: {"code": SNOMED_CONDITION},
)

PATIENTS_HAVING = Case(
    label=f"Patient?_has:Observation:patient:code={LOINC_HAS}",
    resource_type="Patient",
    params=lambda f, n: [("_has:Observation:patient:code", LOINC_HAS)],
    floor_sql=f"""{_BODIES}
        WHERE r.type = 'Patient' AND v.body IS NOT NULL AND r.id IN (
            SELECT f.target_id FROM idx_token t INDEXED BY idx_token_by_value
            CROSS JOIN idx_reference f NOT INDEXED
              ON f.seq = t.seq AND f.param = 'patient'
            WHERE t.type = 'Observation' AND t.param = 'code' AND t.code = :code
              AND f.target_type = 'Patient')
        ORDER BY r.id LIMIT 20""",
    floor_args=lambda f, n: {"code": LOINC_HAS},
)

OBSERVATIONS_OF_OLDER = Case(
    label="Observation?subject:Patient.birthdate=lt1950&_count=50",
    resource_type="Observation",
    params=lambda f, n: [("subject:Patient.birthdate", "lt1950"), ("_count", "50")],
    # Most Observations qualify, so walk them in id order and stop at 50, each checked
    # against the few Patients born before 1950, found once by idx_date value.
    floor_sql=f"""WITH older (id) AS MATERIALIZED (
            SELECT v.id FROM idx_date d INDEXED BY idx_date_by_value
            CROSS JOIN versions v ON v.seq = d.seq
            WHERE d.type = 'Patient' AND d.param = 'birthdate' AND d.low < :before)
        {_BODIES}
        WHERE r.type = 'Observation' AND v.body IS NOT NULL AND EXISTS (
            SELECT 1 FROM idx_reference c NOT INDEXED
            WHERE c.seq = r.seq AND c.param = 'subject'
              AND c.target_type = 'Patient' AND c.target_id IN older)
        ORDER BY r.id LIMIT 50""",
    floor_args=lambda f, n: {"before": BEFORE_1950},
)

CASES = (
    OBSERVATION_BY_PATIENT,
    PATIENT_BY_NAME,
    ENCOUNTERS_LATEST,
    CONDITIONS_WITH_SUBJECT,
    PATIENTS_HAVING,
    OBSERVATIONS_OF_OLDER,
)
