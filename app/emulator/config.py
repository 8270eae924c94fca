"""The emulator's knobs: read from settings at start, changeable at run time by tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from app.core.clock import SystemClock
from app.core.config import Settings
from app.emulator.errors import BodyInvalid

JsonBodyMode = Literal["base64", "plain"]


@dataclass(slots=True)
class EmulatorConfig:
    json_body: JsonBodyMode
    rate_limits: bool
    global_limit: int
    global_window_seconds: int
    queue_msgs_per_second: int
    max_backlog_bytes: int
    max_queues: int
    no_consumer_status: int
    fault_rate: float

    @classmethod
    def from_settings(cls, settings: Settings) -> EmulatorConfig:
        return cls(
            json_body=settings.emulator_json_body,
            rate_limits=settings.emulator_rate_limits,
            global_limit=settings.emulator_global_limit,
            global_window_seconds=settings.emulator_global_window_seconds,
            queue_msgs_per_second=settings.emulator_queue_msgs_per_second,
            max_backlog_bytes=settings.emulator_max_backlog_bytes,
            max_queues=settings.emulator_max_queues,
            no_consumer_status=settings.emulator_no_consumer_status,
            fault_rate=settings.emulator_fault_rate,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes` (validated by `Settings`, so the same bounds hold); all or nothing."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise BodyInvalid(f"unknown emulator settings: {', '.join(sorted(unknown))}")
        merged = {f"emulator_{key}": value for key, value in {**self.as_dict(), **changes}.items()}
        try:
            checked = Settings.model_validate(merged)
        except ValueError as exc:
            raise BodyInvalid(str(exc)) from None
        fresh = EmulatorConfig.from_settings(checked)
        for name in names:
            setattr(self, name, getattr(fresh, name))


class OffsetClock:
    """The system clock plus an offset that tests move (`/_emulator/clock`).

    Frozen, it stands still until moved, so a test can compare exact timestamps.
    """

    def __init__(self) -> None:
        self._system = SystemClock()
        self.offset_ms = 0
        self.frozen_at_ms: int | None = None

    def now_ms(self) -> int:
        if self.frozen_at_ms is not None:
            return self.frozen_at_ms
        return self._system.now_ms() + self.offset_ms

    def advance(self, ms: int) -> None:
        if self.frozen_at_ms is not None:
            self.frozen_at_ms += ms
        self.offset_ms += ms

    def set(self, now_ms: int) -> None:
        if self.frozen_at_ms is not None:
            self.frozen_at_ms = now_ms
        self.offset_ms = now_ms - self._system.now_ms()

    def freeze(self, frozen: bool) -> None:
        if frozen and self.frozen_at_ms is None:
            self.frozen_at_ms = self.now_ms()
        elif not frozen and self.frozen_at_ms is not None:
            self.offset_ms = self.frozen_at_ms - self._system.now_ms()
            self.frozen_at_ms = None

    def reset(self) -> None:
        self.offset_ms = 0
        self.frozen_at_ms = None
