"""Queue backend settings: which engine, the topology file, the Cloudflare account."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from app.core.config import DEFAULT_WRANGLER_CONFIG, SettingsGroup


class QueueBackendSettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "backend": "QUEUE_BACKEND",
        "wrangler_config": "WRANGLER_CONFIG",
    }

    backend: Literal["local", "cloudflare"] = "local"
    wrangler_config: Path = DEFAULT_WRANGLER_CONFIG


class CloudflareSettings(SettingsGroup):
    env_prefix: ClassVar[str] = "CF_"

    account_id: str = "023e105f4ecef8ad9ca31a8372d0c353"
    api_token: str = ""
    api_base_url: str = "https://api.cloudflare.com/client/v4"
    # Cloudflare client: per-request timeout and retries on 429/5xx/network errors.
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
