"""What the providers share: HS256 JWTs, room names, HTTP calls and their error mapping,
header lookup, timestamps, and scrubbing secrets out of anything that becomes a message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import OctKey

from fhirserver.telehealth.providers.base import (
    ROLES,
    ParticipantRole,
    ProviderError,
    ProviderUnavailable,
    Room,
    WebhookRejected,
)

Clock = Callable[[], datetime]
# Longest participant token we sign: a visit plus margin. Longer asks are a caller bug.
MAX_TOKEN_TTL = timedelta(hours=24)
_SCRUBBED = "***"
# Age beyond which a signed webhook is taken for a replay (providers retry within seconds).
REPLAY_WINDOW = timedelta(minutes=5)


class HttpClient:
    """What the REST providers (LiveKit, 100ms, Zoom, Daily) share: one httpx client, closed by
    `aclose` only if the provider made it (a test's mock transport is left alone)."""

    def __init__(self, timeout: float, http: httpx.AsyncClient | None) -> None:
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def oct_key(secret: str, what: str) -> OctKey:
    """An HMAC key for HS256. An empty secret would let anyone forge tokens: refuse it."""
    if not secret:
        raise ValueError(f"{what} must not be empty")
    return OctKey.import_key(secret.encode())


def sign_hs256(claims: Mapping[str, Any], key: OctKey) -> str:
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, dict(claims), key, algorithms=["HS256"])


def verify_hs256(token: str, key: OctKey) -> dict[str, Any]:
    """Decode a JWT and check its HS256 signature (no other algorithm is accepted, so "none"
    or an RS/HS confusion cannot pass). Claims are the caller's to validate."""
    try:
        decoded = jwt.decode(token, key, algorithms=["HS256"])
    except Exception:  # joserfc raises several families (JoseError, ValueError, ...)
        raise WebhookRejected("webhook signature is not valid") from None
    return dict(decoded.claims)


def check_time_claims(claims: Mapping[str, Any], now: datetime, leeway: int) -> None:
    """exp is required and must be in the future; nbf and iat, if present, not in the future."""
    ts = now.timestamp()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise WebhookRejected("webhook token has no expiry")
    if exp <= ts - leeway:
        raise WebhookRejected("webhook token has expired")
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if not isinstance(value, int | float) or isinstance(value, bool) or value > ts + leeway:
            raise WebhookRejected(f"webhook token {name} is not valid")


def check_token_request(
    room: Room, provider: str, identity: str, role: str, ttl: timedelta, record: bool = False
) -> ParticipantRole:
    """What every provider's participant_token checks first; the role, typed. Only a
    host's token may record (a patient never starts a recording)."""
    if room.provider != provider:
        raise ValueError(f"a {room.provider} room cannot be used with the {provider} provider")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not identity or not identity.strip():
        raise ValueError("identity must not be empty")
    if ttl <= timedelta(0) or ttl > MAX_TOKEN_TTL:
        raise ValueError(f"ttl must be positive and at most {MAX_TOKEN_TTL}")
    if record and role != "host":
        raise ValueError("only a host's token may record")
    return "host" if role == "host" else "guest"


_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_prefix(prefix: str) -> None:
    if not _PREFIX.match(prefix):
        raise ValueError("room_prefix must be 1-32 characters of a-z, 0-9, '-', '_'")


def room_name(prefix: str, key: str, secret: bytes | None = None) -> str:
    """A deterministic room name for `key`: lowercase, [a-z0-9_-] only, so it is valid at every
    provider (100ms names are case-insensitive, Jitsi lowercases them).

    With `secret` it is `prefix` + 128 bits of HMAC-SHA256(secret, key) in base32: stable for
    the same key and secret, and unguessable without the secret (Jitsi, where the name is
    the only protection in no-account mode). Without, 128 bits of SHA-256(key) in hex: stable
    across secret rotations, opaque, but not a secret (the providers with tokens).
    """
    if not key:
        raise ValueError("room key must not be empty")
    if secret is None:
        return prefix + hashlib.sha256(key.encode()).hexdigest()[:32]
    digest = hmac.new(secret, key.encode(), hashlib.sha256).digest()[:16]
    return prefix + base64.b32encode(digest).decode().rstrip("=").lower()


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works on a plain dict as well as on Starlette's
    Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, val in headers.items():
        if key.lower() == wanted:
            return val
    return None


def parse_time(value: object) -> datetime | None:
    """An event time: epoch seconds (int, float or a digit string, as protobuf JSON renders
    int64) or an ISO 8601 string. None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        digits = value.strip().lstrip("-")
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            value = int(value)
    if isinstance(value, int | float):
        if value <= 0:
            return None
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
            # In UTC now: an extreme offset near year 1 or 9999 cannot be shown in UTC.
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            return None
    return None


def json_object(body: bytes) -> dict[str, Any]:
    """A webhook body: a JSON object, or WebhookRejected. orjson refuses nesting deeper
    than 1,024 levels (the standard library recursed until RecursionError, a 500)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected("webhook body is not JSON, or nests too deep") from None
    if not isinstance(data, dict):
        raise WebhookRejected("webhook body is not a JSON object")
    return data


def signed_at(raw: str | None, now: datetime, window: timedelta) -> int:
    """The epoch seconds of a webhook's signed timestamp header, or WebhookRejected when it
    is missing, malformed, or more than `window` away from `now` (a replayed capture of a
    genuine delivery: its signature is still valid, only its age gives it away)."""
    raw = (raw or "").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        raise WebhookRejected("webhook has no valid timestamp")
    stamp = int(raw)
    if abs(now.timestamp() - stamp) > window.total_seconds():
        raise WebhookRejected("webhook timestamp is too old or in the future")
    return stamp


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def text_field(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def number(value: object) -> float | None:
    """A reported quantity (a duration, a size): a finite number of at least 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < float("inf") else None


#: The longest a recording of one visit can plausibly run (a provider's room lasts a day
#: or two at most); a longer reported duration is left out, not believed.
MAX_RECORDING = timedelta(days=2)


def recording_duration(seconds: object) -> float | None:
    """A recording's reported duration in seconds: between 0 and MAX_RECORDING, else None."""
    value = number(seconds)
    return value if value is not None and value <= MAX_RECORDING.total_seconds() else None


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every secret (and every bearer token we sent) that occurs in `text`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _SCRUBBED)
    return text


def _retry_after(response: httpx.Response, now: datetime) -> float | None:
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _detail(response: httpx.Response, secrets: Iterable[str | None]) -> str:
    """The provider's own error code/message, short and scrubbed, for the diagnostics."""
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [
        str(data[name])
        for name in ("code", "msg", "message", "error", "info")
        if isinstance(data.get(name), str | int) and not isinstance(data.get(name), bool)
    ]
    detail = scrub(": ".join(parts), secrets)
    detail = " ".join(detail.split())
    return f" ({detail[:200]})" if detail else ""


def raise_for_status(
    response: httpx.Response, what: str, secrets: Iterable[str | None], now: datetime
) -> NoReturn:
    """Turn a non-success response into ProviderUnavailable (408, 429, 5xx) or ProviderError;
    `now` (the provider's clock) turns a Retry-After date into seconds."""
    status = response.status_code
    secrets = list(secrets)
    detail = _detail(response, secrets)
    if status in (408, 429) or status >= 500:
        raise ProviderUnavailable(
            f"{what}: provider unavailable, HTTP {status}{detail}",
            provider_status=status,
            retry_after=_retry_after(response, now) if status in (429, 503) else None,
        )
    if status in (401, 403):
        raise ProviderError(
            f"{what}: provider rejected our credentials, HTTP {status}{detail}",
            provider_status=status,
        )
    raise ProviderError(f"{what}: provider refused, HTTP {status}{detail}", provider_status=status)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    what: str,
    bearer: str,
    time_limit: float,
    json_body: Mapping[str, Any] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """One HTTP call with a bearer token; transport failures become ProviderUnavailable.
    Status codes are the caller's to interpret (some 404s mean success)."""
    try:
        return await client.request(
            method,
            url,
            json=dict(json_body) if json_body is not None else None,
            params=dict(params) if params is not None else None,
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            timeout=time_limit,
        )
    except httpx.TimeoutException:
        raise ProviderUnavailable(f"{what}: provider timed out") from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{what}: provider unreachable ({type(exc).__name__})") from None


def response_object(
    response: httpx.Response, what: str, secrets: Iterable[str | None]
) -> dict[str, Any]:
    """A success response's JSON object, or ProviderError if the provider sent something else
    (usually a misconfigured base URL answering HTML)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProviderError(
            scrub(f"{what}: unexpected response from provider (not a JSON object)", secrets),
            provider_status=response.status_code,
        )
    return data
