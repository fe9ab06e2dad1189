"""One JSON request to the identity provider, and the one error when it cannot answer.

Whatever goes wrong on the way (connection refused, a timeout, a 5xx, a redirect, a
body that is not a JSON object, one too large to be a key set) is the identity
provider's problem, not the client's: the request is answered 503 (`IdPUnavailable`)
rather than 401, so that a client retries instead of throwing its token away. The
message is fixed; the log line names the URL without user info or query
(`external_urls.shown`) and the kind of failure, never a token or a secret.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from fhirserver.auth.external_urls import shown
from fhirserver.errors import Unavailable

logger = logging.getLogger("fhirserver.auth")

# A discovery document, a key set or an introspection answer is a few kilobytes.
MAX_BODY_BYTES = 1024 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|=|$)", re.IGNORECASE)


class IdPUnavailable(Unavailable):
    """The identity provider could not answer: 503, never 401."""

    def __init__(self) -> None:
        super().__init__(
            "The identity provider that issues access tokens cannot be reached; try again later"
        )


@dataclass(frozen=True)
class Fetched:
    """A JSON object the identity provider answered, and how long it may be kept
    (Cache-Control `max-age` in seconds; 0 for no-cache/no-store; None: not said)."""

    body: dict[str, Any]
    max_age: int | None = None


async def fetch_json(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fetched:
    """The JSON object at `url`; raises `IdPUnavailable` for anything else."""
    request_headers = {"Accept": "application/json", **(headers or {})}
    try:
        async with http.stream(
            method, url, data=dict(form) if form else None, headers=request_headers
        ) as response:
            if response.status_code != 200:
                logger.warning(
                    "identity provider answered %s %s with HTTP %d",
                    method,
                    shown(url),
                    response.status_code,
                )
                raise IdPUnavailable()
            body = await _read_limited(response)
            cache_control = response.headers.get("cache-control", "")
    except httpx.HTTPError as error:
        logger.warning(
            "identity provider unreachable: %s %s (%s)", method, shown(url), type(error).__name__
        )
        raise IdPUnavailable() from None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        logger.warning("identity provider sent no JSON object: %s %s", method, shown(url))
        raise IdPUnavailable()
    return Fetched(document, max_age(cache_control))


def max_age(cache_control: str) -> int | None:
    """Seconds a response may be reused for, per its Cache-Control header (RFC 9111
    section 5.2.2): `no-cache`/`no-store` is 0, `max-age=N` is N, else None."""
    if _NO_CACHE.search(cache_control):
        return 0
    found = _MAX_AGE.search(cache_control)
    return int(found.group(1)) if found else None


async def _read_limited(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            logger.warning("identity provider answer too large: %s", shown(str(response.url)))
            raise IdPUnavailable()
        chunks.append(chunk)
    return b"".join(chunks)
