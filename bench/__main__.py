"""`python -m bench`: create and read throughput of fhirserver next to a bare baseline.

Both servers run at once as subprocesses on their own loopback ports (bench.servers),
each with a fresh SQLite file; one after the other, each gets the same warm-up, then the
same timed creates and reads (bench.measure, bench.load) of the same Patient
(bench.patient). bench.report prints the figures.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

from bench import servers
from bench.load import LoadError
from bench.measure import measure
from bench.params import Params
from bench.patient import PATIENT_JSON
from bench.report import report


async def bench(params: Params) -> None:
    # SIGTERM cancels the run like Ctrl-C does, so the servers are still stopped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    print(
        f"bench: {params.creates} creates then {params.reads} reads of a "
        f"{len(PATIENT_JSON)}-byte Patient, {params.concurrency} concurrent clients, "
        f"after {params.warmup} of each to warm up",
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
            ours_figures = await measure(ours, params)
            baseline_figures = await measure(baseline, params)
    print("\n".join(report(ours_figures, baseline_figures)))


def main() -> None:
    try:
        asyncio.run(bench(Params.from_env()))
    except (servers.ServerStartError, LoadError) as error:
        sys.exit(f"bench: {error}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench: interrupted; both servers were stopped")


if __name__ == "__main__":
    main()
