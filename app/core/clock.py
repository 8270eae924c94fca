"""Injectable clocks, so delays, leases and expiry are testable without sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, *, seconds: float = 0, ms: int = 0) -> None:
        self._now_ms += ms + int(seconds * 1000)

    def set(self, now_ms: int) -> None:
        self._now_ms = now_ms


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utcnow() -> datetime:
    return datetime.now(tz=UTC)
