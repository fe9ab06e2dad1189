"""The server's signing keys, kept in the store (auth/keys.py says what they are).

The first server to start makes the key set; every process reads it from the store,
so tokens signed by one verify at all. After `rotate_after` the current key is
replaced; the old one keeps verifying (and stays in the JWKS) for the set's grace
period. Of several processes that find the key due at once, one rotates: each first
claims the rotation's number with an insert-if-absent, and the others carry on with
the set they have, which still verifies.

The exported set holds private keys: it lives in this one record and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fhirserver.auth.keys import SigningKeys, export_private_keys, import_private_keys, rotate
from fhirserver.auth.keys import new_signing_keys as _new_signing_keys
from fhirserver.clock import Clock
from fhirserver.storage.base import Store

KEYS_KIND, KEYS_KEY = "signing-keys", "current"
ROTATION_KIND = "signing-key-rotation"
DEFAULT_ROTATE_AFTER = timedelta(days=30)


@dataclass
class KeyCache:
    """The last set read, by its stored text, so that a request does not parse RSA
    keys again when nothing changed. One per app (on `app.state`), never global."""

    text: str = ""
    keys: SigningKeys | None = field(default=None, repr=False)


async def signing_keys(
    store: Store,
    clock: Clock,
    *,
    grace: timedelta,
    rotate_after: timedelta = DEFAULT_ROTATE_AFTER,
    cache: KeyCache | None = None,
) -> SigningKeys:
    """The current key set: made on first use, rotated when the current key is older
    than `rotate_after`."""
    now = clock()
    body = await store.get_record(KEYS_KIND, KEYS_KEY, now)
    if body is None:
        made = _new_signing_keys(clock, grace)
        document = _document(made, generation=0)
        if await store.add_record(KEYS_KIND, KEYS_KEY, document, None, now):
            return _remember(cache, document, made)
        # Another process made the set first: use theirs.
        body = await store.get_record(KEYS_KIND, KEYS_KEY, now)
        if body is None:
            raise RuntimeError("The signing key set vanished from the store")
    keys = _read(body, cache)
    if now - keys.current.created_at < rotate_after:
        return keys
    generation = int(body["generation"]) + 1
    claimed = await store.add_record(ROTATION_KIND, str(generation), {}, now + rotate_after, now)
    if not claimed:
        return keys
    rotated = rotate(keys, clock)
    document = _document(rotated, generation)
    await store.put_record(KEYS_KIND, KEYS_KEY, document, None)
    return _remember(cache, document, rotated)


def _document(keys: SigningKeys, generation: int) -> dict[str, Any]:
    return {"generation": generation, "keys": export_private_keys(keys)}


def _read(body: dict[str, Any], cache: KeyCache | None) -> SigningKeys:
    text = str(body["keys"])
    if cache is not None and cache.keys is not None and cache.text == text:
        return cache.keys
    return _remember(cache, body, import_private_keys(text))


def _remember(cache: KeyCache | None, body: dict[str, Any], keys: SigningKeys) -> SigningKeys:
    if cache is not None:
        cache.text, cache.keys = str(body["keys"]), keys
    return keys
