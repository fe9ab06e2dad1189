"""Bulk loading with `fhirserver import`, run as the user would, in a subprocess.

The wall time runs from starting the process to its exit (so it includes start-up, the
worker processes' too, and closing the store); the rate is the resources the CLI says it
wrote / that time. Its last stdout line, "fhirserver: imported N resources from F files
in S s (R/s); P problems", must say N = the entries given and P = 0, and afterwards the
store must hold the expected number of current resources, or the bench stops.

Memory: bench.rss samples the process tree (the import and its workers) every 50 ms.
CPU: the tree's user + system seconds, from getrusage(RUSAGE_CHILDREN) around the run,
which counts a process once it has been waited for (the import waits for its workers).
"""

from __future__ import annotations

import re
import resource
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import child, rss
from bench.load_data import LoadBenchError
from fhirserver.subscriptions.publish import shipped_topic_resources

_SUMMARY = re.compile(
    r"fhirserver: imported ([\d,]+) resources from ([\d,]+) files in ([\d.,]+) ?s\b.*?; "
    r"([\d,]+) problems"
)
# Resources whose latest version is not a deletion.
CURRENT_SQL = (
    "SELECT count(*) FROM resources r JOIN versions v ON v.seq = r.seq WHERE v.body IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class Import:
    label: str
    resources: int
    seconds: float
    # The time the CLI itself reports, from opening the store to closing it.
    cli_seconds: float
    tree_kib: int
    main_kib: int
    cpu_seconds: float
    # Current resources in the store afterwards.
    current: int

    @property
    def per_second(self) -> float:
        return self.resources / self.seconds


def command(paths: list[Path], store: Path, workers: int | None) -> list[str]:
    script = Path(sys.executable).parent / "fhirserver"
    chosen = [] if workers is None else ["--workers", str(workers)]
    return [str(script), "import", *map(str, paths), "--store", str(store), *chosen]


async def run(
    label: str,
    paths: list[Path],
    store: Path,
    workers: int | None,
    *,
    resources: int,
    current: int,
) -> Import:
    """Import `paths` into `store`, expecting `resources` written and `current` current
    resources in the store afterwards."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    async with child.started(
        command(paths, store, workers), stdout=child.PIPE, stderr=child.PIPE
    ) as process:
        with rss.TreeSampler(process.pid) as sampler:
            out, err = await process.communicate()
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    lines = stdout.strip().splitlines()
    summary = _SUMMARY.search(lines[-1]) if lines else None
    if summary is None:
        raise LoadBenchError(
            f"{label}: exit status {process.returncode}, no summary line; "
            f"stdout ends {stdout[-300:]!r}, stderr ends {stderr[-600:]!r}"
        )
    written, problems = int(_digits(summary.group(1))), int(_digits(summary.group(4)))
    cli_seconds = float(_digits(summary.group(3)))
    if problems != 0 or process.returncode != 0:
        raise LoadBenchError(
            f"{label}: {problems} problems, exit status {process.returncode}: {stderr[-600:]}"
        )
    if written != resources:
        raise LoadBenchError(f"{label}: imported {written} resources, not {resources}")
    try:
        tree_kib, main_kib = sampler.tree_kib, sampler.main_kib
    except rss.MemoryUnknown as error:
        raise LoadBenchError(f"{label}: peak RSS: {error}") from None
    found = count_current(store)
    if found != current:
        raise LoadBenchError(f"{label}: {found} current resources in the store, not {current}")
    return Import(label, resources, seconds, cli_seconds, tree_kib, main_kib, cpu, found)


def count_current(store: Path) -> int:
    """Current resources, leaving out the SubscriptionTopics a server writes into its
    store when it starts (subscriptions/publish.py): a cached store that the search
    bench has served holds them too."""
    topics = [str(topic["id"]) for topic in shipped_topic_resources()]
    marks = ", ".join("?" * len(topics))
    connection = sqlite3.connect(store)
    try:
        (count,) = connection.execute(
            f"{CURRENT_SQL} AND NOT (r.type = 'Basic' AND r.id IN ({marks}))", topics
        ).fetchone()
    finally:
        connection.close()
    return int(count)


def _digits(text: str) -> str:
    return text.replace(",", "")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
