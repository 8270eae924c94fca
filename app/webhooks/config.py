"""Webhook ingress settings (`JOBGATE_WEBHOOK_*`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from app.core.config import SettingsGroup


class WebhookSettings(SettingsGroup):
    env_prefix: ClassVar[str] = "WEBHOOK_"

    # Timestamp tolerance (both ways), body cap, product-burst window.
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    max_body_bytes: int = Field(default=262_144, ge=1024)
    product_debounce_seconds: int = Field(default=30, ge=1, le=3600)
