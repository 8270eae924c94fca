"""The emulator's knobs: read from settings at start, changeable at run time by tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

from pydantic import Field

from app.core.clock import SystemClock
from app.core.config import DatabaseSettings, RootSettings, SettingsGroup
from app.emulator.errors import BodyInvalid
from app.queues.config import CloudflareSettings

JsonBodyMode = Literal["base64", "plain"]


class EmulatorSettings(SettingsGroup):
    """`jobgate emulator`: the Cloudflare-compatible Queues API (`JOBGATE_EMULATOR_*`)."""

    env_prefix: ClassVar[str] = "EMULATOR_"

    # How pulled `json` bodies are encoded: base64 (documented) or plain JSON (seen in the wild).
    json_body: JsonBodyMode = "base64"
    # Mount `/_emulator/*` (clock, reset, state, faults, config): tests only.
    test_controls: bool = False
    # Simulate Cloudflare's rate limits (429 + Retry-After), so client backoff is exercised.
    rate_limits: bool = False
    global_limit: int = Field(default=1200, ge=1)
    global_window_seconds: int = Field(default=300, ge=1)
    queue_msgs_per_second: int = Field(default=5000, ge=1)
    max_backlog_bytes: int = Field(default=25_000_000_000, ge=1)
    max_queues: int = Field(default=10_000, ge=1)
    # Share of Cloudflare API calls answered with a 500 (code 15000), for soak tests.
    fault_rate: float = Field(default=0.0, ge=0.0, le=1.0)


class EmulatorAppSettings(RootSettings):
    """What `jobgate emulator` reads: its own knobs, the account and token it accepts, and
    its database. The emulator stands apart from the gateway, so it has its own root."""

    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    cloudflare: CloudflareSettings = Field(default_factory=CloudflareSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)


@dataclass(slots=True)
class EmulatorConfig:
    json_body: JsonBodyMode
    rate_limits: bool
    global_limit: int
    global_window_seconds: int
    queue_msgs_per_second: int
    max_backlog_bytes: int
    max_queues: int
    fault_rate: float

    @classmethod
    def from_settings(cls, settings: EmulatorSettings) -> EmulatorConfig:
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply `changes` (validated by `EmulatorSettings`, same bounds); all or nothing."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise BodyInvalid(f"unknown emulator settings: {', '.join(sorted(unknown))}")
        merged = {**self.as_dict(), **changes}
        try:
            checked = EmulatorSettings.model_validate(merged)
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
