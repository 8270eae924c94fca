"""Consumer settings (`JOBGATE_CONSUMER_*`) and its circuit breaker (`JOBGATE_BREAKER_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from app.core.config import SettingsGroup


class ConsumerSettings(SettingsGroup):
    env_prefix: ClassVar[str] = "CONSUMER_"
    env_names: ClassVar[Mapping[str, str]] = {"handler_modules": "HANDLER_MODULES"}

    # Modules imported to register handlers, comma-separated.
    handler_modules: str = "app.handlers"
    # `retry_delay: "exponential"`: base * 2^(attempt-1) s, capped at 86,400 s, minus jitter.
    retry_base_seconds: int = Field(default=30, ge=1, le=86_400)
    retry_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    # Handlers run at once per queue when the topology sets no `max_concurrency`.
    default_concurrency: int = Field(default=10, ge=1, le=250)
    # Messages leased ahead per queue (fair selection by tenant needs more than one batch).
    prefetch: int = Field(default=100, ge=1, le=100)
    # Idle polling: starts at the minimum, doubles while queues stay empty.
    poll_min_ms: int = Field(default=100, ge=10, le=60_000)
    # Unset: 1 s on the local engine, 2 s on Cloudflare (every pull is an API call).
    poll_max_ms: int | None = Field(default=None, ge=10, le=60_000)
    # Lease heartbeat period; unset = a third of the queue's visibility timeout.
    heartbeat_ms: int | None = Field(default=None, ge=10)
    # On SIGTERM: how long in-flight handlers may finish before they are released.
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # A final-delivery attempt whose lease ran out this long ago is lost: the job is dead.
    lost_grace_seconds: int = Field(default=30, ge=0)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)


class BreakerSettings(SettingsGroup):
    """Circuit breaker per (tenant, job type)."""

    env_prefix: ClassVar[str] = "BREAKER_"

    threshold: int = Field(default=5, ge=1)
    window_seconds: int = Field(default=60, ge=1)
    cooldown_seconds: int = Field(default=30, ge=1, le=86_400)
