"""Checking a JWT's claims (RFC 7519 section 4.1) for both kinds of token this server
reads: its own access tokens and clients' RFC 7523 assertions. Each caller names the
claims it requires and the fixed phrase for each refusal, and raises its own error."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from joserfc.errors import ExpiredTokenError, InvalidClaimError, MissingClaimError
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry


def claims_refusal(
    claims: Mapping[str, Any],
    options: Mapping[str, ClaimsOption],
    *,
    now: datetime,
    leeway: timedelta,
    reasons: Mapping[str, str],
    missing: str,
) -> str | None:
    """Why the claims fail `options` at `now` (a fixed phrase: `reasons` by claim name,
    `missing` for an absent required claim), or None when they hold."""
    registry = JWTClaimsRegistry(
        now=int(now.timestamp()), leeway=int(leeway.total_seconds()), **options
    )
    try:
        registry.validate(dict(claims))
    except ExpiredTokenError:
        return "expired"
    except MissingClaimError:
        return missing
    except InvalidClaimError as error:
        return reasons.get(error.claim, "malformed claims")
    return None
