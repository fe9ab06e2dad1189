"""A process's resident set over time (Linux /proc), sampled in a thread of its own, to
tell a peak that levels off (caches filling up to their caps) from one that keeps
growing with the work done."""

from __future__ import annotations

import time

from bench import rss

INTERVAL_SECONDS = 0.1


class RssTrace(rss.Sampler):
    """While the `with` block runs: (seconds since start, VmRSS KiB) samples of `pid`."""

    def __init__(self, pid: int, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__(pid, interval)
        self.samples: list[tuple[float, int]] = []
        self._started = time.perf_counter()

    def __enter__(self) -> RssTrace:
        self._started = time.perf_counter()
        return super().__enter__()

    def _sample(self) -> None:
        kib = rss.status_kib(self.pid, "VmRSS")
        if kib is not None:
            self.samples.append((time.perf_counter() - self._started, kib))

    def peak_in(self, start_share: float, end_share: float) -> int:
        """The largest VmRSS sampled between these shares of the traced time (0 to 1)."""
        if not self.samples:
            raise rss.MemoryUnknown(f"no VmRSS of {self.pid} could be read while it ran")
        span = self.samples[-1][0]
        chosen = [kib for at, kib in self.samples if start_share * span <= at <= end_share * span]
        return max(chosen, default=0)
