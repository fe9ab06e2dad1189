"""The printed search result: a latency table against the floor and the 10 ms target,
then the query plan of each search as fhirserver compiles it, with its problems flagged."""

from __future__ import annotations

from bench.plans import Statement, Step, problems
from bench.search_bench import CaseFigures

# The target: a p50 under this many milliseconds, per search. The search issue asked for
# 30 ms; issue 18 asks for 10 ms with the data 100 times over (BENCH_SEARCH_SCALE=100),
# and the sample's searches answer in a few, so one target serves both runs.
TARGET_MS = 10.0


def table(figures: list[CaseFigures], requests: int) -> list[str]:
    width = max((len(f.case.label) for f in figures), default=5)
    lines = [
        f"search latency, {requests} sequential requests each; fhirserver over HTTP, floor = "
        "hand-written SQL on the same file in-process (ms)",
        f"{'query':<{width}}  {'fhirserver p50/p95':>18}  {'floor p50/p95':>14}  "
        f"{'ratio':>7}  {f'p50<{TARGET_MS:.0f}ms':>8}  same ids",
    ]
    for f in figures:
        ours50, ours95 = f.server.latencies.percentile(50), f.server.latencies.percentile(95)
        floor50, floor95 = f.floor.latencies.percentile(50), f.floor.latencies.percentile(95)
        ratio = ours50 / floor50 if floor50 > 0 else float("inf")
        met = "yes" if ours50 < TARGET_MS else "NO"
        lines.append(
            f"{f.case.label:<{width}}  {ours50:8.1f} /{ours95:8.1f}  {floor50:6.2f} /{floor95:6.2f}"
            f"  {ratio:6.0f}x  {met:>8}  {f.agreeing}/{len(f.server.answers)}"
        )
    for f in figures:
        difference = f.first_difference()
        if difference is not None:
            ours, floor = difference
            lines.append(
                f"DIFFERENT ids for {f.case.label}: fhirserver only {sorted(ours - floor)[:5]}, "
                f"floor only {sorted(floor - ours)[:5]}"
            )
    return lines


def plan(label: str, explained: list[tuple[Statement, list[Step]]]) -> list[str]:
    lines = [label]
    for statement, steps in explained:
        flagged: dict[Step, list[str]] = {}
        for problem in problems(steps, statement.sql):
            flagged.setdefault(problem.step, []).append(problem.kind.upper())
        depth = {0: 0}
        lines.append(f"  {statement.origin}:")
        for step in steps:
            depth[step.id] = depth.get(step.parent, 0) + 1
            mark = f"   <-- {', '.join(flagged[step])}" if step in flagged else ""
            lines.append(f"  {'  ' * depth[step.id]}{step.detail}{mark}")
    return lines


def plan_summary(explained: dict[str, list[tuple[Statement, list[Step]]]]) -> list[str]:
    counts: dict[str, int] = {}
    for statements in explained.values():
        for statement, steps in statements:
            for problem in problems(steps, statement.sql):
                counts[problem.kind] = counts.get(problem.kind, 0) + 1
    if not counts:
        return ["plans: no full scans, unpinned probes or type-wide walks"]
    return ["plans: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))]
