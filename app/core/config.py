"""Settings: one validated root, read from `JOBGATE_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_WRANGLER_CONFIG = REPO_ROOT / "wrangler.jsonc"
# Placeholder that signals "no key configured": fine for development, refused elsewhere.
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"
MIN_SECRET_KEY_CHARS = 16


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
    # PostgreSQL schema put first on the search_path (tests and benchmarks run in a fresh one).
    database_schema: str | None = None
    queue_backend: Literal["local", "cloudflare"] = "local"
    cf_account_id: str = "023e105f4ecef8ad9ca31a8372d0c353"
    cf_api_token: str = ""
    cf_api_base_url: str = "https://api.cloudflare.com/client/v4"
    # Cloudflare client: per-request timeout and retries on 429/5xx/network errors.
    cf_timeout_seconds: float = Field(default=10.0, gt=0)
    cf_max_retries: int = Field(default=4, ge=0, le=20)
    # Outbox relay: publish when 100 jobs wait or the oldest has waited this long.
    outbox_linger_ms: int = Field(default=1000, ge=0, le=60_000)
    outbox_poll_ms: int = Field(default=250, ge=10, le=60_000)
    # Failed publishes (network, 429, 5xx) back off up to this delay, at most this many
    # times per row before its job fails: 100 x 30-60 s rides out an outage of over an hour.
    outbox_max_backoff_ms: int = Field(default=60_000, ge=100, le=3_600_000)
    outbox_max_attempts: int = Field(default=100, ge=1, le=100_000)
    wrangler_config: Path = DEFAULT_WRANGLER_CONFIG
    redis_url: str | None = None
    rate_limit_jobs: str = "600/minute"
    admin_token: str | None = None
    # JWT bearer tokens (RFC 9068 access tokens) beside API keys: keys from a JWKS URL
    # (RS/PS/ES/EdDSA) and/or a shared HS256 secret; unset both to accept API keys only.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_hs256_secret: str | None = None
    jwt_tenant_claim: str = "tenant_id"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    # A stolen token is good for at most this long: longer `exp - iat` (or no `iat`) is a 401.
    jwt_max_lifetime_seconds: int = Field(default=86_400, ge=60)
    jwt_jwks_cache_seconds: int = Field(default=300, ge=1)
    jwt_jwks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Webhook ingress: timestamp tolerance (both ways), body cap, product-burst window.
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    webhook_max_body_bytes: int = Field(default=262_144, ge=1024)
    webhook_product_debounce_seconds: int = Field(default=30, ge=1, le=3600)
    secret_key: str = DEV_SECRET_KEY
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # HTTP server (`jobgate serve`/`dev`, app/core/server.py): a request line plus headers
    # over this size answers 431; a head not complete this long after the connection opened
    # (or its first byte, on a kept-alive connection) answers 408; idle kept-alive connections
    # close after `http_keep_alive_seconds`; connections over the cap answer 503 and close.
    http_max_header_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=3600)
    http_max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    # Addresses whose X-Forwarded-For / X-Forwarded-Proto are trusted (a reverse proxy's),
    # comma-separated, or `*`; the client address decides the failed-auth throttle.
    forwarded_allow_ips: str = "127.0.0.1"
    # Failed authentications (401s) per client address: after `burst` within the window,
    # requests to /v1 from that address answer 429 with Retry-After until the window ends.
    auth_failure_burst: int = Field(default=30, ge=1, le=1_000_000)
    auth_failure_window_seconds: int = Field(default=60, ge=1, le=86_400)
    # How long an Idempotency-Key keeps answering with the original job.
    idempotency_window_seconds: int = Field(default=86_400, ge=1)
    # Cap on any request body, checked while it streams in.
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    # Consumer (app/consumer): modules imported to register handlers, comma-separated.
    handler_modules: str = "app.handlers"
    # `retry_delay: "exponential"`: base * 2^(attempt-1) s, capped at 86,400 s, minus jitter.
    consumer_retry_base_seconds: int = Field(default=30, ge=1, le=86_400)
    consumer_retry_jitter: float = Field(default=0.2, ge=0.0, le=1.0)
    # Handlers run at once per queue when the topology sets no `max_concurrency`.
    consumer_default_concurrency: int = Field(default=10, ge=1, le=250)
    # Messages leased ahead per queue (fair selection by tenant needs more than one batch).
    consumer_prefetch: int = Field(default=100, ge=1, le=100)
    # Idle polling: starts at the minimum, doubles while queues stay empty.
    consumer_poll_min_ms: int = Field(default=100, ge=10, le=60_000)
    # Unset: 1 s on the local engine, 2 s on Cloudflare (every pull is an API call).
    consumer_poll_max_ms: int | None = Field(default=None, ge=10, le=60_000)
    # Lease heartbeat period; unset = a third of the queue's visibility timeout.
    consumer_heartbeat_ms: int | None = Field(default=None, ge=10)
    # On SIGTERM: how long in-flight handlers may finish before they are released.
    consumer_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # A final-delivery attempt whose lease ran out this long ago is lost: the job is dead.
    consumer_lost_grace_seconds: int = Field(default=30, ge=0)
    consumer_sweep_interval_seconds: float = Field(default=30.0, gt=0)
    # Circuit breaker per (tenant, job type).
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_window_seconds: int = Field(default=60, ge=1)
    breaker_cooldown_seconds: int = Field(default=30, ge=1, le=86_400)
    # TEST ONLY: the clock is real time plus the offset (ms) in this file, shared by every
    # process of a test; refused in production.
    test_clock_file: Path | None = None
    # Handlers (app/handlers): outbound email.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    # Delay before re-sending after a 4xx SMTP reply (the company's code waits a minute).
    smtp_retry_delay_seconds: int = Field(default=60, ge=0)
    email_default_sender: str = "jobgate <noreply@localhost>"
    # Handlers: PrestaShop Webservice.
    prestashop_page_size: int = Field(default=100, ge=1, le=1000)
    prestashop_timeout_seconds: float = Field(default=60.0, gt=0)
    # Shop URLs on loopback/private/link-local/metadata addresses (development and tests only).
    allow_private_shop_urls: bool = False
    # Handlers: images and object store (local directory unless `s3`).
    object_store: Literal["local", "s3"] = "local"
    object_store_dir: Path = Path("./.jobgate/objects")
    object_store_s3_bucket: str | None = None
    object_store_s3_endpoint_url: str | None = None
    # Keys are read under `{tenant_id}/` so one tenant's job cannot touch another's objects.
    object_store_per_tenant: bool = True
    alt_text_url: str | None = None
    alt_text_timeout_seconds: float = Field(default=30.0, gt=0)
    # Handlers: AI agents.
    agent_executor_url: str | None = None
    agent_timeout_seconds: float = Field(default=300.0, gt=0)
    # Handlers: analytics events are coalesced into one INSERT per batch.
    analytics_batch_size: int = Field(default=200, ge=1, le=10_000)
    analytics_flush_interval_ms: int = Field(default=50, ge=0, le=60_000)
    # `jobgate emulator` (the Cloudflare-compatible Queues API; docs/cloudflare-queues.md).
    # How pulled `json` bodies are encoded: base64 (documented) or plain JSON (seen in the wild).
    emulator_json_body: Literal["base64", "plain"] = "base64"
    # Mount `/_emulator/*` (clock, reset, state, faults, config): tests only.
    emulator_test_controls: bool = False
    # Simulate Cloudflare's rate limits (429 + Retry-After), so client backoff is exercised.
    emulator_rate_limits: bool = False
    emulator_global_limit: int = Field(default=1200, ge=1)
    emulator_global_window_seconds: int = Field(default=300, ge=1)
    emulator_queue_msgs_per_second: int = Field(default=5000, ge=1)
    emulator_max_backlog_bytes: int = Field(default=25_000_000_000, ge=1)
    emulator_max_queues: int = Field(default=10_000, ge=1)
    # Pulling from a queue without an http_pull consumer (405 was reported by a third party).
    emulator_no_consumer_status: int = Field(default=405, ge=400, le=499)
    # Share of Cloudflare API calls answered with a 500 (code 15000), for soak tests.
    emulator_fault_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("secret_key")
    @classmethod
    def _secret_key_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("JOBGATE_SECRET_KEY must not be empty")
        return value

    @model_validator(mode="after")
    def _jwt_needs_issuer_and_audience(self) -> Settings:
        if (self.jwt_jwks_url or self.jwt_hs256_secret) and not (
            self.jwt_issuer and self.jwt_audience
        ):
            raise ValueError("JWT keys are configured: set JOBGATE_JWT_ISSUER and _AUDIENCE too")
        return self

    def require_secret_key(self) -> None:
        """Refuse the development placeholder (and short keys): for `serve` and `consume`.

        Stored webhook secrets and shop keys are encrypted with this key; the placeholder is
        public, so a gateway started without a key would store them as good as plain text.
        """
        if self.secret_key == DEV_SECRET_KEY:
            raise ValueError(
                "JOBGATE_SECRET_KEY is not set: it encrypts stored webhook secrets and shop "
                f"keys; set it to {MIN_SECRET_KEY_CHARS}+ random characters (e.g. `python -c "
                '"import secrets; print(secrets.token_urlsafe(32))"`), or run `jobgate dev`'
            )
        if len(self.secret_key) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"JOBGATE_SECRET_KEY is too short: use {MIN_SECRET_KEY_CHARS}+ random characters"
            )

    def check_production_secrets(self) -> None:
        """Refuse to run outside development with the placeholder secret key."""
        if self.environment is Environment.production and self.secret_key == DEV_SECRET_KEY:
            raise ValueError("set JOBGATE_SECRET_KEY: the development placeholder is refused")
        if self.environment is Environment.production and self.test_clock_file is not None:
            raise ValueError("JOBGATE_TEST_CLOCK_FILE is for tests only")


@lru_cache
def get_settings() -> Settings:
    return Settings()
