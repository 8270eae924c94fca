"""Logs, metrics and traces settings (`JOBGATE_LOG_FORMAT`, `JOBGATE_OTEL_ENABLED`, ...).

`JOBGATE_LOG_LEVEL` stays with the HTTP server's settings, where it always was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field

from app.core.config import SettingsGroup


class ObservabilitySettings(SettingsGroup):
    env_names: ClassVar[Mapping[str, str]] = {
        "log_format": "LOG_FORMAT",
        "otel_enabled": "OTEL_ENABLED",
        "consumer_metrics_port": "CONSUMER_METRICS_PORT",
        "metrics_sample_seconds": "METRICS_SAMPLE_SECONDS",
        "metrics_include_url": "METRICS_INCLUDE_URL",
    }

    # json (one object per line) or text; unset: json for `serve`/`consume`, text for `dev`.
    log_format: Literal["json", "text"] | None = None
    # Traces through OpenTelemetry (exporter from the standard OTEL_* variables).
    otel_enabled: bool = False
    # `jobgate consume` serves its Prometheus metrics on this port (JOBGATE_HOST); unset: none.
    consumer_metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    # How often the consumer samples queue and DLQ depth, and breaker states. On Cloudflare
    # each sample is one metrics API call per queue (1,200 calls per 5 minutes per account).
    metrics_sample_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    # Another process's /metrics appended to the gateway's (`jobgate dev` sets its consumer's).
    metrics_include_url: str | None = None
