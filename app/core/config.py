"""Settings: one validated root, read from `JOBGATE_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_WRANGLER_CONFIG = REPO_ROOT / "wrangler.jsonc"
# Placeholder that signals "no key configured": fine for development, refused elsewhere.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBGATE_", extra="ignore")

    environment: Environment = Environment.development
    database_url: str = "sqlite:///./jobgate.db"
    # SQLite `synchronous` pragma: FULL fsyncs every commit so a 202 survives power loss too.
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "FULL"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    queue_backend: Literal["local", "cloudflare"] = "local"
    cf_account_id: str = "023e105f4ecef8ad9ca31a8372d0c353"
    cf_api_token: str = ""
    cf_api_base_url: str = "https://api.cloudflare.com/client/v4"
    wrangler_config: Path = DEFAULT_WRANGLER_CONFIG
    redis_url: str | None = None
    rate_limit_jobs: str = "600/minute"
    admin_token: str | None = None
    secret_key: str = DEV_SECRET_KEY
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # How long an Idempotency-Key keeps answering with the original job.
    idempotency_window_seconds: int = Field(default=86_400, ge=1)
    # Cap on any request body, checked while it streams in.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)

    @field_validator("secret_key")
    @classmethod
    def _secret_key_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("JOBGATE_SECRET_KEY must not be empty")
        return value

    def check_production_secrets(self) -> None:
        """Refuse to run outside development with the placeholder secret key."""
        if self.environment is Environment.production and self.secret_key == DEV_SECRET_KEY:
            raise ValueError("set JOBGATE_SECRET_KEY: the development placeholder is refused")


@lru_cache
def get_settings() -> Settings:
    return Settings()
