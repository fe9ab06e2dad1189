"""JWT claim checks (RFC 7519 section 4.1): a refusal is one fixed phrase, never a
library message that could quote the token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from joserfc.jwt import ClaimsOption

from fhirserver.auth.claims import claims_refusal

NOW = datetime(2030, 1, 1, tzinfo=UTC)
OPTIONS: dict[str, ClaimsOption] = {
    "iss": {"essential": True, "value": "https://issuer.example"},
    "exp": {"essential": True},
}
REASONS = {"iss": "issued by another server"}


def refusal(**claims: object) -> str | None:
    return claims_refusal(
        claims, OPTIONS, now=NOW, leeway=timedelta(seconds=30), reasons=REASONS, missing="gap"
    )


def test_good_claims_hold() -> None:
    exp = int(NOW.timestamp()) + 60
    assert refusal(iss="https://issuer.example", exp=exp) is None


def test_each_refusal_is_its_fixed_phrase() -> None:
    exp = int(NOW.timestamp()) + 60
    assert refusal(iss="https://evil.example", exp=exp) == "issued by another server"
    assert refusal(iss="https://issuer.example", exp=int(NOW.timestamp()) - 31) == "expired"
    assert refusal(iss="https://issuer.example") == "gap"


def test_the_leeway_admits_a_little_clock_skew() -> None:
    assert refusal(iss="https://issuer.example", exp=int(NOW.timestamp()) - 29) is None
