"""Retry delays: the queue's fixed `retry_delay`, or exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

MAX_RETRY_DELAY_SECONDS = 86_400


@dataclass(slots=True)
class RetryPolicy:
    """Delay before the next delivery after a failed attempt.

    Fixed: the queue's `retry_delay` seconds. Exponential: `base * 2^(attempt-1)` seconds,
    capped at 86,400 s (Cloudflare's maximum delay), then lowered by up to `jitter` of itself
    so that jobs failing together do not come back together. Never above the cap.
    """

    base_seconds: int = 30
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    def delay_seconds(self, retry_delay: int | Literal["exponential"], attempt: int) -> int:
        if retry_delay != "exponential":
            return min(max(0, retry_delay), MAX_RETRY_DELAY_SECONDS)
        # Beyond 2^17 * base the cap has long been reached; avoid huge integers.
        exponent = min(max(attempt, 1) - 1, 32)
        raw = float(min(self.base_seconds * 2**exponent, MAX_RETRY_DELAY_SECONDS))
        if self.jitter:
            raw *= 1 - self.jitter * self.rng.random()
        return max(1, round(raw))


def clamp_delay(seconds: float) -> int:
    """A handler's `RetryLater(N)` as a queue delay: whole seconds within 0..86,400."""
    return min(max(0, int(-(-seconds // 1))), MAX_RETRY_DELAY_SECONDS)
