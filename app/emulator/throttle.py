"""Rate-limit simulation and fault injection, so clients' backoff is tested for real.

- Global limit (Cloudflare's: 1,200 per 5 minutes): N requests per fixed window per token,
  pull and ack exempt; once exceeded, calls are refused for the rest of the window (429,
  Retry-After; code 10250, the only documented 429 code that fits).
- Per-queue throughput (Cloudflare's: 5,000 per second): M messages per second per queue,
  pushes and pulls (429, 10250).
- Faults: the next N Cloudflare API calls answer 500 (code 15000), 429 (code 10250 with
  Retry-After) or lose their connection, before or after the call took effect; plus an
  optional random share of 500s.

Windows are measured on the emulator's clock, so tests move through them without sleeping.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from app.core.clock import Clock
from app.emulator.config import EmulatorConfig
from app.emulator.errors import BodyInvalid, QueueOverloaded

FaultKind = Literal["error", "rate_limit", "drop"]


class RateLimiter:
    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._global: dict[str, tuple[int, int]] = {}  # token -> (window start ms, count)
        self._queues: dict[str, tuple[int, int]] = {}  # queue id -> (second, messages)

    def reset(self) -> None:
        self._global.clear()
        self._queues.clear()

    def take_request(self, token: str) -> dict[str, str]:
        """Count one request against the token's window; the `Ratelimit` headers to send."""
        config = self._config
        if not config.rate_limits:
            return {}
        now = self._clock.now_ms()
        window_ms = config.global_window_seconds * 1000
        start, count = self._global.get(token, (now, 0))
        if now >= start + window_ms:
            start, count = now, 0
        reset_s = max(1, math.ceil((start + window_ms - now) / 1000))
        policy = f'"default";q={config.global_limit};w={config.global_window_seconds}'
        if count >= config.global_limit:
            raise QueueOverloaded(
                f"More than {config.global_limit} requests per {config.global_window_seconds} "
                "seconds reached. Please wait and consider throttling your request speed",
                headers={
                    "Retry-After": str(reset_s),
                    "Ratelimit": f'"default";r=0;t={reset_s}',
                    "Ratelimit-Policy": policy,
                },
            )
        self._global[token] = (start, count + 1)
        remaining = config.global_limit - count - 1
        return {"Ratelimit": f'"default";r={remaining};t={reset_s}', "Ratelimit-Policy": policy}

    def take_messages(self, queue_id: str, count: int, *, partial: bool = False) -> int:
        """Reserve `count` messages of the queue's per-second budget.

        A push needs all of them (`partial=False`); a pull takes what is left (at least one,
        else 429) and returns how many it may deliver.
        """
        config = self._config
        if not config.rate_limits:
            return count
        now = self._clock.now_ms()
        second = now // 1000
        window, used = self._queues.get(queue_id, (second, 0))
        if window != second:
            used = 0
        left = config.queue_msgs_per_second - used
        granted = min(count, left) if partial else (count if count <= left else 0)
        if granted <= 0:
            retry_after = max(1, math.ceil(((second + 1) * 1000 - now) / 1000))
            raise QueueOverloaded(
                f"queue throughput is limited to {config.queue_msgs_per_second} messages/s",
                headers={"Retry-After": str(retry_after)},
            )
        self._queues[queue_id] = (second, used + granted)
        return granted

    def give_back(self, queue_id: str, count: int) -> None:
        """Return reserved messages a pull did not deliver."""
        window = self._queues.get(queue_id)
        if window is not None and count > 0:
            self._queues[queue_id] = (window[0], max(0, window[1] - count))


@dataclass(slots=True)
class Fault:
    kind: FaultKind
    remaining: int
    retry_after: int = 1
    match: str = ""  # only paths containing this substring
    after: bool = False  # let the call take effect, then fail it


class FaultPlan:
    """Scheduled faults, consumed in order by matching Cloudflare API calls."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._pending: deque[Fault] = deque()

    def add(self, fault: Fault) -> None:
        if fault.kind not in ("error", "rate_limit", "drop"):
            raise BodyInvalid("kind must be 'error', 'rate_limit' or 'drop'")
        if fault.remaining < 1:
            raise BodyInvalid("count must be at least 1")
        self._pending.append(fault)

    def clear(self) -> None:
        self._pending.clear()

    @property
    def pending(self) -> list[Fault]:
        return list(self._pending)

    def take(self, path: str) -> Fault | None:
        for fault in self._pending:
            if fault.match in path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._pending.remove(fault)
                return fault
        if self._config.fault_rate and random.random() < self._config.fault_rate:
            return Fault(kind="error", remaining=0)
        return None
