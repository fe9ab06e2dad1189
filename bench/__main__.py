"""`python -m bench`: REST throughput next to a bare baseline, then search latency.

REST: both servers run at once as subprocesses on their own loopback ports (bench.servers),
each with a fresh SQLite file; one after the other, each gets the same warm-up, then the
same timed creates and reads (bench.measure, bench.load) of the same Patient
(bench.patient). bench.report prints the figures.

Search (bench.search_run): the Synthea sample loaded into a store (bench.synthea, cached
between runs), six searches timed over HTTP next to hand-written SQL, and the plans of the
SQL fhirserver compiles for them. BENCH_SEARCH_SCALE=100 runs them on the data 100 times
over instead (bench.scaled_stores), the optional run at scale.

Load (bench.load_bench): the Synthea Bundles bulk-loaded over HTTP and by `fhirserver
import`, next to a bare executemany, with peak memory, and an import of a 10x NDJSON set.
Export (bench.export_bench) and subscriptions (bench.subscription_bench: notification
latency and delivery throughput next to the bare write).
Bindings (bench.bindings_bench): the required-binding check's cost per Synthea resource,
next to a bare walk of the same resources and the other validation layers.
Profiles (bench.profile_bench): US Core profile checks per resource next to the core
validation and a floor.
Validation (bench.validate_bench): the cost per resource of each validation layer.
Isolation (bench.isolation): a reader's latency while another client posts large
resources, next to the same reads alone.
MongoDB (bench.mongo_bench): creates and contended updates with one and two store
instances, next to bare inserts.
Soak (bench.soak): 200k mixed reads, searches and creates against one server, its RSS
over time and whether it plateaus; `python -m bench soak --requests N` runs it alone.
BENCH_ONLY=rest, search, load, export, subscriptions, bindings, profiles, validate,
isolation, mongo or soak runs one of them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from bench import (
    bindings_bench,
    export_bench,
    isolation,
    load_bench,
    load_data,
    mongo_bench,
    profile_bench,
    scaled_stores,
    search_run,
    servers,
    soak,
    subscription_bench,
    synthea,
    validate_bench,
)
from bench.load import LoadError
from bench.load_data import LoadBenchError
from bench.measure import ROUNDS, measure
from bench.params import Params
from bench.patient import PATIENT_JSON
from bench.report import report
from bench.rss import MemoryUnknown
from bench.search_bench import SearchError
from bench.search_cases import FixtureError
from bench.subscription_bench import SubscriptionBenchError, SubscriptionParams

_BENCH_ERRORS = (
    servers.ServerStartError,
    LoadError,
    synthea.LoadFailed,
    FixtureError,
    SearchError,
    LoadBenchError,
    SubscriptionBenchError,
    MemoryUnknown,
)


def _cancel_on_sigterm() -> None:
    # SIGTERM cancels the run like Ctrl-C does, so the servers are still stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)


async def bench(params: Params) -> None:
    _cancel_on_sigterm()
    print(
        f"bench: {params.creates} creates then {params.reads} reads of a "
        f"{len(PATIENT_JSON)}-byte Patient, {params.concurrency} concurrent clients, "
        f"after {params.warmup} of each to warm up; the servers take turns, "
        f"{ROUNDS} for the creates and {ROUNDS} for the reads (bench/measure.py)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fhirserver-bench-") as scratch:
        async with AsyncExitStack() as stack:
            ours = await stack.enter_async_context(
                servers.running(
                    "fhirserver", servers.fhirserver_command(Path(scratch, "fhir.sqlite"))
                )
            )
            baseline = await stack.enter_async_context(
                servers.running(
                    "baseline", servers.baseline_command(Path(scratch, "baseline.sqlite"))
                )
            )
            # Both cores serving (issue 18 point 4): the same store contract, N processes.
            workers = await stack.enter_async_context(
                servers.running(
                    "fhirserver --workers 2",
                    servers.fhirserver_command(Path(scratch, "workers.sqlite")),
                    {"FHIRSERVER_WORKERS": "2"},
                )
            )
            ours_figures, baseline_figures, workers_figures = await measure(
                [ours, baseline, workers], params
            )
    print("\n".join(report(ours_figures, baseline_figures)))
    print("\n".join(report(workers_figures, baseline_figures, "fhirserver --workers 2")))


async def search_bench(store: Path, params: Params) -> None:
    _cancel_on_sigterm()
    await search_run.run(store, params.search_requests)


async def scaled_store(scale: int) -> Path:
    _cancel_on_sigterm()
    return (await scaled_stores.ready(load_data.survey(synthea.DATA_DIR), scale)).path


def search_store(params: Params) -> Path:
    """The sample's store, or for the optional run at scale (issue 18: p50 under 10 ms at
    100x) one built by `fhirserver import` of the data `search_scale` times over."""
    if params.search_scale == 1:
        return synthea.loaded_store()
    return asyncio.run(scaled_store(params.search_scale))


async def bulk_load_bench(params: Params) -> None:
    _cancel_on_sigterm()
    await load_bench.run(params)


async def export_benchmark(params: Params) -> None:
    _cancel_on_sigterm()
    await export_bench.run(params)


async def subscriptions_benchmark(params: Params) -> None:
    _cancel_on_sigterm()
    await subscription_bench.run(
        SubscriptionParams(
            latency_writes=params.subs_latency_writes,
            throughput_writes=params.subs_writes,
            subscriptions=params.subs_count,
            concurrency=params.concurrency,
        )
    )


async def soak_benchmark(params: soak.SoakParams) -> None:
    _cancel_on_sigterm()
    await soak.run(params)


def main() -> None:
    if sys.argv[1:2] == ["soak"]:
        _run_soak(soak.parse(sys.argv[2:]))
        return
    params = Params.from_env()
    try:
        if params.runs("rest"):
            asyncio.run(bench(params))
        if params.runs("search"):
            asyncio.run(search_bench(search_store(params), params))
        if params.runs("load"):
            asyncio.run(bulk_load_bench(params))
        if params.runs("export"):
            asyncio.run(export_benchmark(params))
        if params.runs("subscriptions"):
            asyncio.run(subscriptions_benchmark(params))
        if params.runs("bindings"):
            bindings_bench.run()
        if params.runs("profiles"):
            profile_bench.run()
        if params.runs("validate"):
            validate_bench.run(params)
        if params.runs("isolation"):
            asyncio.run(isolation.run())
        if params.runs("mongo"):
            asyncio.run(mongo_bench.run())
    except _BENCH_ERRORS as error:
        sys.exit(f"bench: {error}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench: interrupted; the servers and imports were stopped")
    if params.runs("soak"):
        _run_soak(soak.SoakParams(requests=params.soak_requests))


def _run_soak(params: soak.SoakParams) -> None:
    try:
        asyncio.run(soak_benchmark(params))
    except _BENCH_ERRORS as error:
        sys.exit(f"bench: {error}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench: interrupted; the servers were stopped")


if __name__ == "__main__":
    main()
