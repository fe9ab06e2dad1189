"""The load parameters: one fixed set, counts overridable by BENCH_* environment variables."""

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

    @classmethod
    def from_env(cls) -> Params:
        defaults = cls()
        return cls(
            creates=_count("BENCH_CREATES", defaults.creates),
            reads=_count("BENCH_READS", defaults.reads),
            concurrency=_count("BENCH_CONCURRENCY", defaults.concurrency),
        )


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"bench: {name} must be a positive integer, not {raw!r}")
    return int(raw)
