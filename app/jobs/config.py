"""Job submission settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from app.core.config import SettingsGroup


class JobSettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "idempotency_window_seconds": "IDEMPOTENCY_WINDOW_SECONDS",
    }

    # How long an Idempotency-Key keeps answering with the original job.
    idempotency_window_seconds: int = Field(default=86_400, ge=1)
