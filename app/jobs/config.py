"""Job submission settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from app.core.config import SettingsGroup


class JobSettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "idempotency_window_seconds": "IDEMPOTENCY_WINDOW_SECONDS",
        "bulk_retry_rate": "BULK_RETRY_RATE",
    }

    # How long an Idempotency-Key keeps answering with the original job.
    idempotency_window_seconds: int = Field(default=86_400, ge=1)
    # A bulk retry re-publishes at most this many jobs per second and queue: the rest wait
    # behind growing delays, so redriving a DLQ cannot flood its queue.
    bulk_retry_rate: int = Field(default=20, ge=1, le=10_000)
