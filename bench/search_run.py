"""The search benchmark end to end: the Synthea store (loaded or cached), the query plans
fhirserver compiles for the six searches, then their latency over HTTP and at the floor."""

from __future__ import annotations

from pathlib import Path

from bench import servers
from bench.plans import Statement, Step, explain, search_statements
from bench.search_bench import floor_connection, measure
from bench.search_cases import CASES, fixture
from bench.search_report import plan, plan_summary, table
from fhirserver.errors import FHIRError

WARMUP = 5


async def run(path: Path, requests: int) -> None:
    connection = floor_connection(path)
    try:
        data = fixture(connection)
        (pages,), (page_size,) = (
            connection.execute(f"PRAGMA {pragma}").fetchone()
            for pragma in ("page_count", "page_size")
        )
        explained: dict[str, list[tuple[Statement, list[Step]]]] = {}
        for case in CASES:
            try:
                statements = search_statements(connection, case.resource_type, case.params(data, 0))
            except FHIRError as error:
                # Reported again, with the server's answer, when the search is timed.
                print(f"search: {case.label} does not compile: {error}")
                continue
            explained[case.label] = [(s, explain(connection, s)) for s in statements]
    finally:
        connection.close()
    print(
        f"search: {len(CASES)} searches on {path.name} ({pages * page_size / 2**30:.1f} GiB), "
        f"{requests} timed after {WARMUP} untimed each, patients rotating over "
        f"{len(data.patients):,}",
        flush=True,
    )
    async with servers.running("fhirserver", servers.fhirserver_command(path)) as server:
        figures, failures = await measure(
            server.base_url,
            path,
            CASES,
            data,
            requests,
            WARMUP,
            lambda line: print(line, flush=True),
        )
    print("\n".join([*table(figures, requests), *failures]))
    print("\n".join(plan_summary(explained)))
    print("EXPLAIN QUERY PLAN of the SQL fhirserver runs (the first request of each search):")
    for label, plans in explained.items():
        print("\n".join(plan(label, plans)))
