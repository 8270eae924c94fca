"""The root settings: every domain's group, read from the environment once, at the entry
point (`jobgate` commands, `create_app`), then handed out group by group.

It lives beside `main.py` rather than in `app/core` because it nests every domain's group,
and `core` imports no domain package. Each group (a `SettingsGroup`, in its own package's
`config.py`) names its flat `JOBGATE_*` variables; `FlatEnvSource` (app/core/config.py)
reads exactly those, so every documented variable keeps its name, and nothing else under
`JOBGATE_` (a misspelling, a JSON blob named after a group, a `__`-nested name) is read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from app.admission.config import AdmissionSettings, AuthFailureSettings
from app.consumer.config import BreakerSettings, ConsumerSettings
from app.core.config import (
    DEV_SECRET_KEY,
    DatabaseSettings,
    Environment,
    HttpSettings,
    RootSettings,
    SecuritySettings,
)
from app.emulator.config import EmulatorSettings
from app.handlers.config import (
    AgentSettings,
    AnalyticsSettings,
    ImageSettings,
    ObjectStoreSettings,
    PrestaShopSettings,
    SmtpSettings,
)
from app.jobs.config import JobSettings
from app.observability.config import ObservabilitySettings
from app.outbox.config import OutboxSettings
from app.queues.config import CloudflareSettings, QueueBackendSettings
from app.tenants.config import JwtSettings
from app.webhooks.config import WebhookSettings


class Settings(RootSettings):
    environment: Environment = Environment.development
    # TEST ONLY: the clock is real time plus the offset (ms) in this file, shared by every
    # process of a test; refused in production.
    test_clock_file: Path | None = None

    db: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    queues: QueueBackendSettings = Field(default_factory=QueueBackendSettings)
    cloudflare: CloudflareSettings = Field(default_factory=CloudflareSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    jwt: JwtSettings = Field(default_factory=JwtSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    auth_failures: AuthFailureSettings = Field(default_factory=AuthFailureSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    prestashop: PrestaShopSettings = Field(default_factory=PrestaShopSettings)
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    def check_production_secrets(self) -> None:
        """Refuse to run outside development with the placeholder secret key."""
        production = self.environment is Environment.production
        if production and self.security.secret_key == DEV_SECRET_KEY:
            raise ValueError("set JOBGATE_SECRET_KEY: the development placeholder is refused")
        if production and self.test_clock_file is not None:
            raise ValueError("JOBGATE_TEST_CLOCK_FILE is for tests only")


@lru_cache
def get_settings() -> Settings:
    return Settings()
