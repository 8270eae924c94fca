"""Injectable clocks, so delays, leases and expiry are testable without sleeping."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
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


class OffsetFileClock:
    """TEST ONLY: real time plus an offset in ms read from a file (missing or empty = 0).

    Every process of an end-to-end test points at the same file, so a test moves time for
    the gateway and the consumer at once by rewriting it (`write_clock_offset`).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._offset_ms = 0

    def now_ms(self) -> int:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return time.time_ns() // 1_000_000
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            text = self._path.read_text(encoding="ascii").strip()
            self._offset_ms = int(text) if text else 0
            self._stamp = stamp
        return time.time_ns() // 1_000_000 + self._offset_ms


def write_clock_offset(path: Path, offset_ms: int) -> None:
    """Atomically set the offset an `OffsetFileClock` adds (tests)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(offset_ms), encoding="ascii")
    os.replace(tmp, path)
