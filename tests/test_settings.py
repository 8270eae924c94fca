"""Every documented `JOBGATE_*` variable still lands on its setting, now in a nested group;
nothing else under the prefix is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from app.admission.config import Watermarks
from app.core.config import Environment
from app.emulator.config import EmulatorAppSettings
from app.settings import Settings

# Variable, where it lands ("group.field", or a root field), a raw value, what it parses to.
# Written out by hand (not derived from the settings classes), so a renamed or dropped
# variable fails here. JWT keys need an issuer and audience, which every case sets.
VARIABLES: list[tuple[str, str, str, Any]] = [
    ("JOBGATE_ENVIRONMENT", "environment", "production", Environment.production),
    ("JOBGATE_DATABASE_URL", "db.url", "custom", "custom"),
    ("JOBGATE_SQLITE_SYNCHRONOUS", "db.sqlite_synchronous", "OFF", "OFF"),
    ("JOBGATE_DB_POOL_SIZE", "db.pool_size", "11", 11),
    ("JOBGATE_DATABASE_SCHEMA", "db.schema_name", "custom", "custom"),
    (
        "JOBGATE_ALEMBIC_INI",
        "db.alembic_ini",
        "/srv/jobgate/alembic.ini",
        Path("/srv/jobgate/alembic.ini"),
    ),
    ("JOBGATE_QUEUE_BACKEND", "queues.backend", "cloudflare", "cloudflare"),
    ("JOBGATE_CF_ACCOUNT_ID", "cloudflare.account_id", "custom", "custom"),
    ("JOBGATE_CF_API_TOKEN", "cloudflare.api_token", "custom", "custom"),
    ("JOBGATE_CF_API_BASE_URL", "cloudflare.api_base_url", "custom", "custom"),
    ("JOBGATE_CF_TIMEOUT_SECONDS", "cloudflare.timeout_seconds", "10.5", 10.5),
    ("JOBGATE_CF_MAX_RETRIES", "cloudflare.max_retries", "5", 5),
    ("JOBGATE_OUTBOX_LINGER_MS", "outbox.linger_ms", "1001", 1001),
    ("JOBGATE_OUTBOX_POLL_MS", "outbox.poll_ms", "251", 251),
    ("JOBGATE_OUTBOX_MAX_BACKOFF_MS", "outbox.max_backoff_ms", "60001", 60001),
    ("JOBGATE_OUTBOX_MAX_ATTEMPTS", "outbox.max_attempts", "101", 101),
    ("JOBGATE_WRANGLER_CONFIG", "queues.wrangler_config", "/srv/jobgate/x", Path("/srv/jobgate/x")),
    ("JOBGATE_REDIS_URL", "admission.redis_url", "custom", "custom"),
    ("JOBGATE_RATE_LIMIT_JOBS", "admission.rate_limit_jobs", "7/second", "7/second"),
    ("JOBGATE_ADMIN_TOKEN", "security.admin_token", "custom", "custom"),
    ("JOBGATE_JWT_ISSUER", "jwt.issuer", "custom", "custom"),
    ("JOBGATE_JWT_AUDIENCE", "jwt.audience", "custom", "custom"),
    ("JOBGATE_JWT_JWKS_URL", "jwt.jwks_url", "custom", "custom"),
    ("JOBGATE_JWT_HS256_SECRET", "jwt.hs256_secret", "custom", "custom"),
    ("JOBGATE_JWT_TENANT_CLAIM", "jwt.tenant_claim", "custom", "custom"),
    ("JOBGATE_JWT_LEEWAY_SECONDS", "jwt.leeway_seconds", "31", 31),
    ("JOBGATE_JWT_MAX_LIFETIME_SECONDS", "jwt.max_lifetime_seconds", "86401", 86401),
    ("JOBGATE_JWT_JWKS_CACHE_SECONDS", "jwt.jwks_cache_seconds", "301", 301),
    ("JOBGATE_JWT_JWKS_TIMEOUT_SECONDS", "jwt.jwks_timeout_seconds", "5.5", 5.5),
    ("JOBGATE_WEBHOOK_TOLERANCE_SECONDS", "webhooks.tolerance_seconds", "301", 301),
    ("JOBGATE_WEBHOOK_MAX_BODY_BYTES", "webhooks.max_body_bytes", "262145", 262145),
    ("JOBGATE_WEBHOOK_PRODUCT_DEBOUNCE_SECONDS", "webhooks.product_debounce_seconds", "31", 31),
    ("JOBGATE_SECRET_KEY", "security.secret_key", "custom", "custom"),
    ("JOBGATE_HOST", "http.host", "custom", "custom"),
    ("JOBGATE_PORT", "http.port", "8001", 8001),
    ("JOBGATE_LOG_LEVEL", "http.log_level", "custom", "custom"),
    ("JOBGATE_PUBLIC_URL", "http.public_url", "https://jobs.example.com", "https://jobs.example.com"),
    ("JOBGATE_HTTP_MAX_HEADER_BYTES", "http.max_header_bytes", "65537", 65537),
    ("JOBGATE_HTTP_HEADER_TIMEOUT_SECONDS", "http.header_timeout_seconds", "10.5", 10.5),
    ("JOBGATE_HTTP_KEEP_ALIVE_SECONDS", "http.keep_alive_seconds", "6", 6),
    ("JOBGATE_HTTP_MAX_CONNECTIONS", "http.max_connections", "4097", 4097),
    ("JOBGATE_FORWARDED_ALLOW_IPS", "http.forwarded_allow_ips", "custom", "custom"),
    ("JOBGATE_AUTH_FAILURE_BURST", "auth_failures.burst", "31", 31),
    ("JOBGATE_AUTH_FAILURE_WINDOW_SECONDS", "auth_failures.window_seconds", "61", 61),
    ("JOBGATE_IDEMPOTENCY_WINDOW_SECONDS", "jobs.idempotency_window_seconds", "86401", 86401),
    ("JOBGATE_BULK_RETRY_RATE", "jobs.bulk_retry_rate", "7", 7),
    ("JOBGATE_MAX_REQUEST_BYTES", "http.max_request_bytes", "1048577", 1048577),
    ("JOBGATE_HANDLER_MODULES", "consumer.handler_modules", "custom", "custom"),
    ("JOBGATE_CONSUMER_RETRY_BASE_SECONDS", "consumer.retry_base_seconds", "31", 31),
    ("JOBGATE_CONSUMER_RETRY_JITTER", "consumer.retry_jitter", "0.7", 0.7),
    ("JOBGATE_CONSUMER_DEFAULT_CONCURRENCY", "consumer.default_concurrency", "11", 11),
    ("JOBGATE_CONSUMER_PREFETCH", "consumer.prefetch", "99", 99),
    ("JOBGATE_CONSUMER_POLL_MIN_MS", "consumer.poll_min_ms", "101", 101),
    ("JOBGATE_CONSUMER_POLL_MAX_MS", "consumer.poll_max_ms", "18", 18),
    ("JOBGATE_CONSUMER_HEARTBEAT_MS", "consumer.heartbeat_ms", "18", 18),
    ("JOBGATE_CONSUMER_SHUTDOWN_GRACE_SECONDS", "consumer.shutdown_grace_seconds", "30.5", 30.5),
    ("JOBGATE_CONSUMER_LOST_GRACE_SECONDS", "consumer.lost_grace_seconds", "31", 31),
    ("JOBGATE_CONSUMER_SWEEP_INTERVAL_SECONDS", "consumer.sweep_interval_seconds", "30.5", 30.5),
    ("JOBGATE_BREAKER_THRESHOLD", "breaker.threshold", "6", 6),
    ("JOBGATE_BREAKER_WINDOW_SECONDS", "breaker.window_seconds", "61", 61),
    ("JOBGATE_BREAKER_COOLDOWN_SECONDS", "breaker.cooldown_seconds", "31", 31),
    ("JOBGATE_TEST_CLOCK_FILE", "test_clock_file", "/srv/jobgate/x", Path("/srv/jobgate/x")),
    ("JOBGATE_SMTP_HOST", "smtp.host", "custom", "custom"),
    ("JOBGATE_SMTP_PORT", "smtp.port", "26", 26),
    ("JOBGATE_SMTP_TLS", "smtp.tls", "starttls", "starttls"),
    ("JOBGATE_SMTP_USERNAME", "smtp.username", "custom", "custom"),
    ("JOBGATE_SMTP_PASSWORD", "smtp.password", "custom", "custom"),
    ("JOBGATE_SMTP_TIMEOUT_SECONDS", "smtp.timeout_seconds", "30.5", 30.5),
    ("JOBGATE_SMTP_RETRY_DELAY_SECONDS", "smtp.retry_delay_seconds", "61", 61),
    ("JOBGATE_EMAIL_DEFAULT_SENDER", "smtp.default_sender", "custom", "custom"),
    ("JOBGATE_PRESTASHOP_PAGE_SIZE", "prestashop.page_size", "101", 101),
    ("JOBGATE_PRESTASHOP_TIMEOUT_SECONDS", "prestashop.timeout_seconds", "60.5", 60.5),
    ("JOBGATE_ALLOW_PRIVATE_SHOP_URLS", "prestashop.allow_private_urls", "true", True),
    ("JOBGATE_OBJECT_STORE", "object_store.kind", "s3", "s3"),
    ("JOBGATE_OBJECT_STORE_DIR", "object_store.dir", "/srv/jobgate/x", Path("/srv/jobgate/x")),
    ("JOBGATE_OBJECT_STORE_S3_BUCKET", "object_store.s3_bucket", "custom", "custom"),
    ("JOBGATE_OBJECT_STORE_S3_ENDPOINT_URL", "object_store.s3_endpoint_url", "custom", "custom"),
    ("JOBGATE_OBJECT_STORE_PER_TENANT", "object_store.per_tenant", "false", False),
    ("JOBGATE_ALT_TEXT_URL", "images.alt_text_url", "custom", "custom"),
    ("JOBGATE_ALT_TEXT_TIMEOUT_SECONDS", "images.alt_text_timeout_seconds", "30.5", 30.5),
    ("JOBGATE_AGENT_EXECUTOR_URL", "agent.executor_url", "custom", "custom"),
    ("JOBGATE_AGENT_TIMEOUT_SECONDS", "agent.timeout_seconds", "300.5", 300.5),
    ("JOBGATE_ANALYTICS_BATCH_SIZE", "analytics.batch_size", "201", 201),
    ("JOBGATE_LOG_FORMAT", "observability.log_format", "text", "text"),
    ("JOBGATE_OTEL_ENABLED", "observability.otel_enabled", "true", True),
    ("JOBGATE_CONSUMER_METRICS_PORT", "observability.consumer_metrics_port", "9465", 9465),
    ("JOBGATE_METRICS_SAMPLE_SECONDS", "observability.metrics_sample_seconds", "16.5", 16.5),
    ("JOBGATE_METRICS_INCLUDE_URL", "observability.metrics_include_url", "custom", "custom"),
    ("JOBGATE_EMULATOR_JSON_BODY", "emulator.json_body", "plain", "plain"),
    ("JOBGATE_EMULATOR_TEST_CONTROLS", "emulator.test_controls", "true", True),
    ("JOBGATE_EMULATOR_RATE_LIMITS", "emulator.rate_limits", "true", True),
    ("JOBGATE_EMULATOR_GLOBAL_LIMIT", "emulator.global_limit", "1201", 1201),
    ("JOBGATE_EMULATOR_GLOBAL_WINDOW_SECONDS", "emulator.global_window_seconds", "301", 301),
    ("JOBGATE_EMULATOR_QUEUE_MSGS_PER_SECOND", "emulator.queue_msgs_per_second", "5001", 5001),
    (
        "JOBGATE_EMULATOR_MAX_BACKLOG_BYTES",
        "emulator.max_backlog_bytes",
        "25000000001",
        25000000001,
    ),
    ("JOBGATE_EMULATOR_MAX_QUEUES", "emulator.max_queues", "10001", 10001),
    ("JOBGATE_EMULATOR_FAULT_RATE", "emulator.fault_rate", "0.5", 0.5),
    ("JOBGATE_ADMISSION_RATE_LIMIT_BATCH", "admission.rate_limit_batch", "7/second", "7/second"),
    ("JOBGATE_ADMISSION_RATE_LIMIT_READS", "admission.rate_limit_reads", "7/second", "7/second"),
    (
        "JOBGATE_ADMISSION_RATE_LIMIT_WEBHOOKS",
        "admission.rate_limit_webhooks",
        "7/second",
        "7/second",
    ),
    ("JOBGATE_ADMISSION_REDIS_PREFIX", "admission.redis_prefix", "custom", "custom"),
    ("JOBGATE_ADMISSION_MAX_IN_FLIGHT", "admission.max_in_flight", "100001", 100001),
    ("JOBGATE_ADMISSION_HIGH_MESSAGES", "admission.high_messages", "100001", 100001),
    ("JOBGATE_ADMISSION_LOW_MESSAGES", "admission.low_messages", "50001", 50001),
    ("JOBGATE_ADMISSION_HIGH_BYTES", "admission.high_bytes", "1073741825", 1073741825),
    ("JOBGATE_ADMISSION_LOW_BYTES", "admission.low_bytes", "536870913", 536870913),
    (
        "JOBGATE_ADMISSION_WATERMARKS",
        "admission.watermarks",
        '{"email-sending": {"high_messages": 5000, "low_messages": 2500}}',
        {"email-sending": Watermarks(high_messages=5000, low_messages=2500)},
    ),
    ("JOBGATE_ADMISSION_SAMPLE_INTERVAL_MS", "admission.sample_interval_ms", "1001", 1001),
    ("JOBGATE_ADMISSION_CF_METRICS_POLL_MS", "admission.cf_metrics_poll_ms", "5001", 5001),
    ("JOBGATE_ADMISSION_STALE_AFTER_MS", "admission.stale_after_ms", "10001", 10001),
    ("JOBGATE_ADMISSION_ON_UNKNOWN", "admission.on_unknown", "closed", "closed"),
    ("JOBGATE_ADMISSION_DRAIN_WINDOW_MS", "admission.drain_window_ms", "30001", 30001),
    (
        "JOBGATE_ADMISSION_RETRY_AFTER_FALLBACK_SECONDS",
        "admission.retry_after_fallback_seconds",
        "31",
        31,
    ),
    ("JOBGATE_ADMISSION_QUOTA_CACHE_MS", "admission.quota_cache_ms", "1001", 1001),
    ("JOBGATE_ADMISSION_BREAKER_CACHE_MS", "admission.breaker_cache_ms", "1001", 1001),
    ("JOBGATE_ADMISSION_PLAN_CACHE_MS", "admission.plan_cache_ms", "30001", 30001),
    ("JOBGATE_ADMISSION_BREAKER_TYPES", "admission.breaker_types", "custom", "custom"),
]
BASE_ENV = {"JOBGATE_JWT_ISSUER": "issuer", "JOBGATE_JWT_AUDIENCE": "audience"}


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Only the variables a test sets (the runner's own `JOBGATE_*` are cleared)."""
    for name in list(os.environ):
        if name.upper().startswith("JOBGATE_"):
            monkeypatch.delenv(name)
    for name, value in BASE_ENV.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def _get(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _differences(left: dict[str, Any], right: dict[str, Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key in left.keys() | right.keys():
        a, b = left.get(key), right.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in {"watermarks"}:
            found |= _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.add(f"{prefix}{key}")
    return found


@pytest.mark.parametrize(("variable", "path", "raw", "expected"), VARIABLES, ids=lambda v: v)
def test_each_variable_sets_exactly_its_field(
    environ: pytest.MonkeyPatch, variable: str, path: str, raw: str, expected: Any
) -> None:
    baseline = Settings()
    assert _get(baseline, path) != expected, "pick a value other than the default"
    environ.setenv(variable, raw)
    configured = Settings()
    assert _get(configured, path) == expected
    assert _differences(baseline.model_dump(), configured.model_dump()) == {path}


def test_the_table_covers_every_setting() -> None:
    """A new setting gets its row above (and its line in the README if users set it)."""
    read = {
        name: f"{root}.{field}" if field else root
        for name, (root, field) in Settings.env_vars().items()
    }
    assert read == {variable: path for variable, path, _, _ in VARIABLES}


def test_variable_names_are_case_insensitive(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("jobgate_smtp_host", "mail.example.com")
    assert Settings().smtp.host == "mail.example.com"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("JOBGATE_SMTP_HOSTNAME", "mail.example.com"),  # misspelt
        ("JOBGATE_SMTP", '{"host": "mail.example.com", "port": 2525}'),  # a group as JSON
        ("JOBGATE_SMTP__HOST", "mail.example.com"),  # `__`-nested
        ("JOBGATE_DB", '{"url": "postgresql://elsewhere/db"}'),
        ("JOBGATE_URL", "postgresql://elsewhere/db"),  # a group field without its prefix
        ("JOBGATE_SCHEMA_NAME", "other"),
        ("JOBGATE_HTTP_HOST", "0.0.0.0"),  # the group's name is not a prefix of `host`
        ("JOBGATE_HTTP_PORT", "9999"),
        ("JOBGATE_SECURITY_SECRET_KEY", "x" * 32),
        ("JOBGATE_QUEUES_BACKEND", "cloudflare"),
        ("JOBGATE_OBJECT_STORE_KIND", "s3"),
        ("JOBGATE_PRESTASHOP_ALLOW_PRIVATE_URLS", "true"),
        ("JOBGATE_SMTP_DEFAULT_SENDER", "x <x@example.com>"),
        ("JOBGATE_CONSUMER_HANDLER_MODULES", "tests.x"),
        ("JOBGATE_ADMISSION_REDIS_URL", "redis://elsewhere:6379/0"),
        ("JOBGATE_ADMISSION_RATE_LIMIT_JOBS", "1/second"),
        ("JOBGATE_ADMISSION", '{"max_in_flight": 1}'),
        ("JOBGATE_AUTH_FAILURES_BURST", "1"),
        ("JOBGATE_IMAGES_ALT_TEXT_URL", "http://alt.example.com/"),
        ("JOBGATE_ALT_TEXT_ALT_TEXT_URL", "http://alt.example.com/"),
        ("JOBGATE_EMULATOR", '{"fault_rate": 1.0}'),
    ],
)
def test_other_prefixed_variables_change_nothing(
    environ: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    baseline = Settings().model_dump()
    environ.setenv(variable, raw)
    assert Settings().model_dump() == baseline
    assert variable not in Settings.env_vars()


def test_keyword_arguments_win_over_the_environment_field_by_field(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("JOBGATE_SMTP_HOST", "mail.example.com")
    environ.setenv("JOBGATE_SMTP_PORT", "2525")
    settings = Settings(smtp={"port": 587})
    assert (settings.smtp.host, settings.smtp.port) == ("mail.example.com", 587)


def test_updated_validates_the_group_and_keeps_the_rest(environ: pytest.MonkeyPatch) -> None:
    settings = Settings()
    changed = settings.updated(smtp={"port": 2525})
    assert changed.smtp.port == 2525
    assert changed.smtp.host == settings.smtp.host
    assert settings.smtp.port == 25
    with pytest.raises(ValueError, match="port"):
        settings.updated(smtp={"port": 0})
    with pytest.raises(ValueError, match="hostname"):
        settings.updated(smtp={"hostname": "x"})


def test_the_emulator_reads_the_same_variables_for_its_groups(
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("JOBGATE_CF_API_TOKEN", "token")
    environ.setenv("JOBGATE_EMULATOR_FAULT_RATE", "0.25")
    environ.setenv("JOBGATE_DATABASE_URL", "sqlite:///./emulator.db")
    emulator = EmulatorAppSettings()
    root = Settings()
    assert (emulator.cloudflare, emulator.emulator, emulator.db) == (
        root.cloudflare,
        root.emulator,
        root.db,
    )
    assert root.emulator.fault_rate == 0.25
