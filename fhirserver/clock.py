"""The one source of wall-clock time (DESIGN.md: "time comes from one injected clock").

`create_app` takes a `Clock` and hands the same one to everything that reads the time:
`meta.lastUpdated`, the write rules, the job runner, the telehealth join windows and
tokens. Tests pass a clock they can move. Durations that must not jump with the wall
clock (rate limits, lock deadlines) use `time.monotonic` instead, which is not a time
of day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Now, in UTC, from the operating system."""
    return datetime.now(UTC)
