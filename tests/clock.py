"""The app's one clock in tests (fhirserver/clock.py): real time until a test moves it."""

from __future__ import annotations

from datetime import UTC, datetime


class MovableClock:
    def __init__(self) -> None:
        self.moved_to: datetime | None = None

    def __call__(self) -> datetime:
        return self.moved_to or datetime.now(UTC)

    def move_to(self, moment: datetime) -> None:
        """From now on the time is `moment` for everything the app does."""
        self.moved_to = moment
