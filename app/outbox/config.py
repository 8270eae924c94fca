"""Outbox relay settings (`JOBGATE_OUTBOX_*`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from app.core.config import SettingsGroup


class OutboxSettings(SettingsGroup):
    env_prefix: ClassVar[str] = "OUTBOX_"

    # Publish when 100 jobs wait or the oldest has waited this long.
    linger_ms: int = Field(default=1000, ge=0, le=60_000)
    poll_ms: int = Field(default=250, ge=10, le=60_000)
    # Failed publishes (network, 429, 5xx) back off up to this delay, at most this many
    # times per row before its job fails: 100 x 30-60 s rides out an outage of over an hour.
    max_backoff_ms: int = Field(default=60_000, ge=100, le=3_600_000)
    max_attempts: int = Field(default=100, ge=1, le=100_000)
