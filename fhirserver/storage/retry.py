"""Running a unit of work again when it loses a race.

On MongoDB units of work run concurrently, each in a snapshot transaction; when two
write the same document, one is refused with a write conflict, and the driver
documentation's advice is to run the whole transaction again ("Transactions in
Applications": retry on TransientTransactionError). The store turns that into
`Contention`; here the caller's work is run from its first read again, in a new
unit, so that its decisions (the current version, a conditional match) are taken
again on what the winner wrote. SQLite units are exclusive and never contend.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fhirserver.errors import Contention
from fhirserver.storage.base import Store, UnitOfWork

T = TypeVar("T")

# How long a unit keeps being run again before the client gets 503 with Retry-After:
# the lock timeout a SQLite writer waits for, the same order as HAPI's default
# retry of a conflicting transaction (a few attempts within seconds).
RETRY_SECONDS = 10.0
FIRST_DELAY, LONGEST_DELAY = 0.002, 0.1


async def run_unit(
    store: Store,
    work: Callable[[UnitOfWork], Awaitable[T]],
    budget: float = RETRY_SECONDS,
) -> T:
    """`work` in a unit of work, committed; run again in a new unit, after a short
    random backoff, while the unit loses a race and the budget lasts. `work` must do
    nothing but read and write through the unit it is given (it may run more than once)."""
    deadline = time.monotonic() + budget
    delay = FIRST_DELAY
    while True:
        try:
            async with store.unit_of_work() as unit:
                return await work(unit)
        except Contention:
            if time.monotonic() + delay > deadline:
                raise
        # Jitter: units that collided once should not collide again in lockstep.
        await asyncio.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, LONGEST_DELAY)
