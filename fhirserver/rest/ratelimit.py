"""Rate limits for public endpoints: a token bucket per key (a client address, a
meeting code), in this process's memory.

Each key may spend `burst` requests at once and earns them back at `per_minute`. Keys
idle long enough to be full again are forgotten, and at most `max_keys` are kept (the
least recently seen go first), so memory stays bounded under a flood of new keys.
With N server processes a client gets N times the limit at most; the limit is there
to make guessing slow, and N is small.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request


class RateLimit:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        # key -> (tokens left, when last counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one request of `key`: 0 if allowed, else the seconds to wait."""
        now = self.clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def give_back(self, key: str) -> None:
        """Return a request `key` spent and turned out not to count (a success where
        only failures should): taken first and given back after, rather than counted
        after, so that requests in flight at once cannot all pass a check of the count."""
        if key not in self._buckets:
            return
        tokens, then = self._buckets[key]
        self._buckets[key] = (min(float(self.burst), tokens + 1), then)

    @staticmethod
    def retry_after(wait: float) -> str:
        """The Retry-After header value for a wait, in whole seconds."""
        return str(max(1, math.ceil(wait)))


def client_key(request: Request) -> str:
    """Whom a per-client limit counts: the address, or for IPv6 its /64, which one
    subscriber usually holds whole (else each of its 2^64 addresses gets a fresh limit)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return host
