"""Where the SQLite store starts a search (DESIGN.md "Search"; R4 search.html#sort: with
no _sort the store pages in id order): from the index rows of its most selective clause,
unless that clause has so many rows that walking the type's resources in id order finds
a page sooner. Either way the answer is the same; what differs is the SQL that runs, so
the statements are traced."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.search.parse import parse_search
from fhirserver.search.query import SearchQuery
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.storage.sqlite.store import _search

SNOMED = "http://snomed.info/sct"
SINUSITIS, ASTHMA = "444814009", "195967001"
MATCHING = [f"c{n}" for n in range(6)]


def _condition(resource_id: str, code: str, onset: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": resource_id,
        "code": {"coding": [{"system": SNOMED, "code": code}]},
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": onset,
    }


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[sqlite3.Connection]:
    """Six Conditions of one code and two of another (of Patients p0 to p2 in turn),
    read by a connection of its own."""
    path = tmp_path / "dense.sqlite"
    store = SqliteStore(str(path))
    await store.open()
    try:
        conditions = [_condition(i, SINUSITIS, f"201{n}") for n, i in enumerate(MATCHING)]
        conditions += [_condition(i, ASTHMA, "2010") for i in ("a1", "a2")]
        for n, resource in enumerate(conditions):
            resource["subject"] = {"reference": f"Patient/p{n % 3}"}
            await crud.update(store, WriteContext(), "Condition", resource["id"], resource)
        for n in range(4):
            patient = {"resourceType": "Patient", "id": f"p{n}"}
            await crud.update(store, WriteContext(), "Patient", f"p{n}", patient)
    finally:
        await store.close()
    connection = sqlite3.connect(path, isolation_level=None, cached_statements=0)
    try:
        yield connection
    finally:
        connection.close()


def _traced(
    connection: sqlite3.Connection, query: SearchQuery, dense_rows: int
) -> tuple[list[str], str]:
    """The ids found, and the page's statement."""
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        result = _search(connection, query, dense_rows)
    finally:
        connection.set_trace_callback(None)
    (page,) = [s for s in statements if "ORDER BY" in s]
    return [version.id for version in result.matches], page


def _having(code: str) -> SearchQuery:
    return parse_search(("Patient",), [("_has:Condition:subject:code", code)], strict=True)


async def test_a_has_of_a_value_with_few_index_rows_lists_its_sources(
    database: sqlite3.Connection,
) -> None:
    ids, page = _traced(database, _having(ASTHMA), dense_rows=3)
    assert ids == ["p0", "p1"]  # a1 and a2 are the 7th and 8th Conditions
    assert "+h1.seq IN (SELECT" in page


async def test_a_has_of_a_dense_value_tests_each_source_by_its_rows(
    database: sqlite3.Connection,
) -> None:
    ids, page = _traced(database, _having(SINUSITIS), dense_rows=6)
    assert ids == ["p0", "p1", "p2"]
    assert "+h1.seq IN (SELECT" not in page
    assert "WHERE t2.seq = h1.seq" in page


def _query(*extra: tuple[str, str]) -> SearchQuery:
    return parse_search(("Condition",), [("code", SINUSITIS), *extra], strict=True)


async def test_a_clause_with_few_index_rows_starts_from_them(
    database: sqlite3.Connection,
) -> None:
    ids, page = _traced(database, _query(), dense_rows=7)
    assert ids == MATCHING
    assert "v.seq IN (SELECT" in page


async def test_a_clause_with_many_index_rows_walks_the_type_in_id_order(
    database: sqlite3.Connection,
) -> None:
    ids, page = _traced(database, _query(), dense_rows=6)
    assert ids == MATCHING
    assert "v.seq IN (SELECT" not in page
    # The walk pages as the index's way does.
    first, _ = _traced(database, _query(("_count", "4")), dense_rows=6)
    assert first == MATCHING[:4]


async def test_a_dense_clause_beside_others_starts_from_the_index_rows(
    database: sqlite3.Connection,
) -> None:
    """With another clause the matches may be few however many rows the one has: a walk
    could go through every resource of the type."""
    ids, page = _traced(database, _query(("subject", "Patient/p0")), dense_rows=1)
    assert ids == ["c0", "c3"]
    assert "v.seq IN (SELECT" in page


async def test_a_sorted_search_starts_from_the_index_rows_however_many(
    database: sqlite3.Connection,
) -> None:
    """A page in another order than id's needs every match sorted: no walk ends early."""
    ids, page = _traced(database, _query(("_sort", "-onset-date")), dense_rows=1)
    assert ids == MATCHING[::-1]
    assert "v.seq IN (SELECT" in page


async def test_the_walk_probes_each_resource_by_its_key(database: sqlite3.Connection) -> None:
    """The walk reads the type's resources by primary key, and looks each one's index
    rows up by (seq, param): no table or whole index is scanned."""
    _, page = _traced(database, _query(), dense_rows=1)
    database.set_trace_callback(None)
    plan = [row[3] for row in database.execute(f"EXPLAIN QUERY PLAN {page}")]
    assert plan[0].startswith("SEARCH r USING PRIMARY KEY (type=?"), plan
    assert any("USING PRIMARY KEY (seq=? AND param=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan
