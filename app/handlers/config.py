"""Settings of the built-in handlers: email, PrestaShop, images and object store, agents,
analytics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from app.core.config import SettingsGroup


class SmtpSettings(SettingsGroup):
    """Outbound email."""

    env_prefix: ClassVar[str] = "SMTP_"
    env_names: ClassVar[Mapping[str, str]] = {"default_sender": "EMAIL_DEFAULT_SENDER"}

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    # Delay before re-sending after a 4xx SMTP reply (the company's code waits a minute).
    retry_delay_seconds: int = Field(default=60, ge=0)
    default_sender: str = "jobgate <noreply@localhost>"


class PrestaShopSettings(SettingsGroup):
    """PrestaShop Webservice."""

    env_prefix: ClassVar[str] = "PRESTASHOP_"
    env_names: ClassVar[Mapping[str, str]] = {"allow_private_urls": "ALLOW_PRIVATE_SHOP_URLS"}

    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_seconds: float = Field(default=60.0, gt=0)
    # Shop URLs on loopback/private/link-local/metadata addresses (development and tests only).
    allow_private_urls: bool = False


class ObjectStoreSettings(SettingsGroup):
    """Where images live: a local directory unless `s3`."""

    env_prefix: ClassVar[str] = "OBJECT_STORE_"
    env_names: ClassVar[Mapping[str, str]] = {"kind": "OBJECT_STORE"}

    kind: Literal["local", "s3"] = "local"
    dir: Path = Path("./.jobgate/objects")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    # Keys are read under `{tenant_id}/` so one tenant's job cannot touch another's objects.
    per_tenant: bool = True


class ImageSettings(SettingsGroup):
    """Alt-text service the image handlers call."""

    alt_text_url: str | None = None
    alt_text_timeout_seconds: float = Field(default=30.0, gt=0)


class AgentSettings(SettingsGroup):
    """AI agents."""

    env_prefix: ClassVar[str] = "AGENT_"

    executor_url: str | None = None
    timeout_seconds: float = Field(default=300.0, gt=0)


class AnalyticsSettings(SettingsGroup):
    """Analytics events: one INSERT per pulled batch, of at most `batch_size` rows each."""

    env_prefix: ClassVar[str] = "ANALYTICS_"

    batch_size: int = Field(default=200, ge=1, le=10_000)
