"""The load parameters: one fixed set, counts overridable by BENCH_* environment variables.

BENCH_ONLY=rest, search, load, export, subscriptions, bindings, profiles, validate,
isolation, mongo or soak runs only that benchmark (all run by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass

PARTS = (
    "rest",
    "search",
    "load",
    "export",
    "subscriptions",
    "bindings",
    "profiles",
    "validate",
    "isolation",
    "mongo",
    "soak",
)


@dataclass(frozen=True, slots=True)
class Params:
    creates: int = 3000
    reads: int = 6000
    concurrency: int = 16
    # Untimed requests of each kind first, so neither server is measured cold.
    warmup: int = 200
    # Timed requests per search in the search benchmark, sent one after the other.
    search_requests: int = 40
    # Copies of the Synthea data in the search bench's store: 1 is the sample itself; more
    # (100: 2.8 million resources, about 19 GB, half an hour to build once) is the optional
    # run at scale, not part of the default `make bench`.
    search_scale: int = 1
    # Bulk loading: clients POSTing the Synthea Bundles at once over HTTP.
    load_concurrency: int = 4
    # Bulk loading: `fhirserver import --workers`; None leaves the CLI's default (one per core).
    import_workers: int | None = None
    # Bulk loading and export: copies of the Synthea data in the set that shows import and
    # export memory do not grow with the data.
    load_scale: int = 10
    # Subscriptions: writes one at a time for notification latency, writes for delivery
    # throughput, and the active subscriptions they all match.
    subs_latency_writes: int = 200
    subs_writes: int = 200
    subs_count: int = 100
    # Validation cost per layer: resources of this many Synthea Bundles.
    validate_files: int = 20
    # Soak: mixed requests against one server while its RSS is traced.
    soak_requests: int = 200_000
    only: str | None = None

    @classmethod
    def from_env(cls) -> Params:
        defaults = cls()
        return cls(
            creates=_count("BENCH_CREATES", defaults.creates),
            reads=_count("BENCH_READS", defaults.reads),
            concurrency=_count("BENCH_CONCURRENCY", defaults.concurrency),
            search_requests=_count("BENCH_SEARCH_REQUESTS", defaults.search_requests),
            search_scale=_count("BENCH_SEARCH_SCALE", defaults.search_scale),
            load_concurrency=_count("BENCH_LOAD_CONCURRENCY", defaults.load_concurrency),
            import_workers=_workers("BENCH_IMPORT_WORKERS"),
            load_scale=_count("BENCH_LOAD_SCALE", defaults.load_scale),
            subs_latency_writes=_count("BENCH_SUBS_LATENCY_WRITES", defaults.subs_latency_writes),
            subs_writes=_count("BENCH_SUBS_WRITES", defaults.subs_writes),
            subs_count=_count("BENCH_SUBS_COUNT", defaults.subs_count),
            validate_files=_count("BENCH_VALIDATE_FILES", defaults.validate_files),
            soak_requests=_count("BENCH_SOAK_REQUESTS", defaults.soak_requests),
            only=_only(),
        )

    def runs(self, name: str) -> bool:
        return self.only is None or self.only == name


def _only() -> str | None:
    raw = os.environ.get("BENCH_ONLY") or None
    if raw is not None and raw not in PARTS:
        raise SystemExit(f"bench: BENCH_ONLY must be one of {', '.join(PARTS)}, not {raw!r}")
    return raw


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"bench: {name} must be a positive integer, not {raw!r}")
    return int(raw)


def _workers(name: str) -> int | None:
    # 0 is meaningful here: the import then parses and validates in its own process.
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise SystemExit(f"bench: {name} must be a whole number, not {raw!r}")
    return int(raw)
