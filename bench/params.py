"""The load parameters: one fixed set, counts overridable by BENCH_* environment variables.

BENCH_ONLY=rest or BENCH_ONLY=search runs only that benchmark (both run by default)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Params:
    creates: int = 3000
    reads: int = 6000
    concurrency: int = 16
    # Untimed requests of each kind first, so neither server is measured cold.
    warmup: int = 200
    # Timed requests per search in the search benchmark, sent one after the other.
    search_requests: int = 40
    only: str | None = None

    @classmethod
    def from_env(cls) -> Params:
        defaults = cls()
        return cls(
            creates=_count("BENCH_CREATES", defaults.creates),
            reads=_count("BENCH_READS", defaults.reads),
            concurrency=_count("BENCH_CONCURRENCY", defaults.concurrency),
            search_requests=_count("BENCH_SEARCH_REQUESTS", defaults.search_requests),
            only=_only(),
        )

    def runs(self, name: str) -> bool:
        return self.only is None or self.only == name


def _only() -> str | None:
    raw = os.environ.get("BENCH_ONLY") or None
    if raw not in (None, "rest", "search"):
        raise SystemExit(f"bench: BENCH_ONLY must be rest or search, not {raw!r}")
    return raw


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"bench: {name} must be a positive integer, not {raw!r}")
    return int(raw)
