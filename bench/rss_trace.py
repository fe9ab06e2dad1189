"""A process's resident set over time (Linux /proc), sampled in a thread of its own, to
tell a peak that levels off (caches filling up to their caps) from one that keeps
growing with the work done."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from bench import rss

INTERVAL_SECONDS = 0.1


class RssTrace:
    """While the `with` block runs: (seconds since start, VmRSS KiB) samples of `pid`."""

    def __init__(self, pid: int, interval: float = INTERVAL_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-trace-{pid}", daemon=True)

    def __enter__(self) -> RssTrace:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.perf_counter()
        while True:
            kib = rss.status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append((time.perf_counter() - started, kib))
            if self._stop.wait(self.interval):
                return

    def peak_in(self, start_share: float, end_share: float) -> int:
        """The largest VmRSS sampled between these shares of the traced time (0 to 1)."""
        if not self.samples:
            raise rss.MemoryUnknown(f"no VmRSS of {self.pid} could be read while it ran")
        span = self.samples[-1][0]
        chosen = [kib for at, kib in self.samples if start_share * span <= at <= end_share * span]
        return max(chosen, default=0)
