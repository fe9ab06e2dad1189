"""Rate limits for public endpoints (DESIGN.md "Security"): a burst, then one request
per refill interval, per key; memory bounded."""

from __future__ import annotations

from fhirserver.rest.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_refill_rate() -> None:
    clock = Clock()
    limit = RateLimit(per_minute=6, burst=3, clock=clock)
    assert [limit.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limit.take("a")
    assert 9.9 < wait <= 10.0
    assert RateLimit.retry_after(wait) == "10"
    assert limit.take("b") == 0.0
    clock.now += 10
    assert limit.take("a") == 0.0
    assert limit.take("a") > 0


def test_keys_are_bounded() -> None:
    limit = RateLimit(per_minute=1, burst=1, max_keys=100, clock=Clock())
    for n in range(1000):
        assert limit.take(str(n)) == 0.0
    assert len(limit._buckets) == 100
    # The most recent keys are the ones remembered.
    assert limit.take("999") > 0


def test_a_request_given_back_costs_nothing() -> None:
    """Issue 20 point 3: a join or login that succeeds gives its request back, so only
    failures count."""
    clock = Clock()
    limit = RateLimit(per_minute=6, burst=2, clock=clock)
    for _ in range(5):
        assert limit.take("a") == 0.0
        limit.give_back("a")
    assert [limit.take("a") > 0 for _ in range(3)] == [False, False, True]
    # Never more than the burst, and nothing to give back for a key it never saw.
    limit.give_back("c")
    for _ in range(4):
        limit.give_back("d")
    assert [limit.take("d") > 0 for _ in range(3)] == [False, False, True]
