"""Shared by the provider contract tests: a fixed clock, JWT signing and decoding with a
known secret, and an httpx client whose transport is a fake provider."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey

NOW = datetime(2030, 5, 17, 9, 30, tzinfo=UTC)


def clock() -> datetime:
    return NOW


def key(secret: str) -> OctKey:
    return OctKey.import_key(secret.encode())


def sign(claims: dict[str, Any], secret: str, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg, "typ": "JWT"}, claims, key(secret), algorithms=[alg])


def claims(token: str, secret: str) -> dict[str, Any]:
    """Verify the HS256 signature with `secret` (raises if wrong) and return the claims."""
    return dict(jwt.decode(token, key(secret), algorithms=["HS256"]).claims)


def bearer_claims(request: httpx.Request, secret: str) -> dict[str, Any]:
    auth = request.headers.get("Authorization", "")
    assert auth.startswith("Bearer "), "API calls must carry a bearer token"
    return claims(auth.removeprefix("Bearer "), secret)


def client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def assert_no_secrets(texts: Iterable[str], secrets: Iterable[str]) -> None:
    texts = list(texts)
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret leaked into: {text!r}"
