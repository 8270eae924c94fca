"""Retry delays: fixed, exponential, capped, jittered within bounds."""

from __future__ import annotations

import random

from app.consumer.retry import MAX_RETRY_DELAY_SECONDS, RetryPolicy, clamp_delay


class TestRetryPolicy:
    def test_exponential_is_exact_without_jitter_and_capped(self) -> None:
        policy = RetryPolicy(base_seconds=30, jitter=0)
        assert [policy.delay_seconds("exponential", n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
        assert policy.delay_seconds("exponential", 30) == MAX_RETRY_DELAY_SECONDS
        assert policy.delay_seconds(15, 7) == 15

    def test_jitter_stays_within_its_bound(self) -> None:
        policy = RetryPolicy(base_seconds=100, jitter=0.2, rng=random.Random(7))
        delays = [policy.delay_seconds("exponential", 3) for _ in range(200)]
        assert all(320 <= d <= 400 for d in delays)
        assert len(set(delays)) > 10  # it does spread them
        capped = [policy.delay_seconds("exponential", 40) for _ in range(50)]
        assert all(MAX_RETRY_DELAY_SECONDS * 0.8 <= d <= MAX_RETRY_DELAY_SECONDS for d in capped)

    def test_retry_later_delays_are_clamped_to_whole_seconds(self) -> None:
        assert [clamp_delay(s) for s in (-5, 0, 1.2, 90, 10**9)] == [0, 0, 2, 90, 86_400]
