"""Aggregator: importing this registers every table on SQLModel.metadata (Alembic, tests)."""

from app.admission import models as admission_models  # noqa: F401
from app.consumer.models import CircuitBreaker
from app.core.counters import RowCounter
from app.emulator.models import EmulatorConsumer, EmulatorQueue
from app.handlers import models as handler_models  # noqa: F401
from app.jobs.models import Job, JobAttempt, JobEvent
from app.outbox.models import OutboxMessage
from app.queues.models import QueueMessage
from app.scheduler.models import Schedule, ScheduleFire
from app.tenants.models import ApiKey, OperatorKey, Tenant, WebhookSecret
from app.webhooks import models as webhook_models  # noqa: F401

__all__ = [
    "ApiKey",
    "CircuitBreaker",
    "EmulatorConsumer",
    "EmulatorQueue",
    "Job",
    "JobAttempt",
    "JobEvent",
    "OperatorKey",
    "OutboxMessage",
    "QueueMessage",
    "RowCounter",
    "Schedule",
    "ScheduleFire",
    "Tenant",
    "WebhookSecret",
]
