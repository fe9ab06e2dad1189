"""An expiring lock record with an owner: one subscription's delivery, the matcher.

Each acquisition carries a random token in the record's body; renewal and release are
compare-and-set on it (Store.replace_record, delete_record(only_if=...)). A holder whose
lock ran out (a slow endpoint, a pause) and was taken over finds its renewal refused,
and its release leaves the new holder's lock alone. The expiry is what passes a dead
holder's lock on; a live holder renews before each write it makes under the lock.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fhirserver.clock import Clock
from fhirserver.storage.base import Store


class LockLost(Exception):
    """The lock ran out and is someone else's, or nobody's: stop, write nothing more."""


def _token() -> dict[str, Any]:
    return {"owner": secrets.token_hex(16)}


@dataclass(frozen=True)
class OwnedLock:
    store: Store
    kind: str
    key: str
    # How long an acquisition or a renewal holds it.
    hold: timedelta
    clock: Clock
    # New per acquisition (a new OwnedLock each time), never reused.
    body: dict[str, Any] = field(default_factory=_token)

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it (an expired one is nobody's)."""
        now = self.clock()
        return await self.store.add_record(self.kind, self.key, self.body, now + self.hold, now)

    async def renew(self) -> bool:
        """Hold it `hold` longer; False if it is no longer ours (ran out, or taken over)."""
        now = self.clock()
        return await self.store.replace_record(
            self.kind, self.key, self.body, self.body, now + self.hold, now
        )

    async def keep(self) -> None:
        """Renew, before a write made under the lock; LockLost if it is no longer ours."""
        if not await self.renew():
            raise LockLost(f"{self.kind}/{self.key}")

    async def release(self) -> None:
        """Let go, if it is still ours."""
        await self.store.delete_record(self.kind, self.key, only_if=self.body)
