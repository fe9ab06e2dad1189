"""bench/subscription_bench.py (issue 15 point 8; R4 subscription.html "rest-hook"): the
bench at a tiny size against a real server and a real receiver, so it cannot rot. A
notification follows its committed write well within the matcher's 1 s poll (the runner
is woken after the commit), and each of subscriptions x writes arrives exactly once."""

from __future__ import annotations

from bench.subscription_bench import SubscriptionParams, measure, table


async def test_the_subscription_bench_measures_latency_and_delivery_at_a_tiny_size() -> None:
    params = SubscriptionParams(
        latency_writes=5, throughput_writes=4, subscriptions=3, concurrency=2
    )
    figures = await measure(params)
    assert figures.notifications == 12 and figures.duplicates == 0
    assert 0 < figures.write_latency.p50 <= figures.write_latency.p95
    assert figures.notification_latency.p50 < 0.5
    assert figures.notifications_per_second > 0 and figures.writes_per_second > 0
    assert len(table(params, figures)) == 6
