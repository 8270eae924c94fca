"""Aggregator: importing this registers every table on SQLModel.metadata (Alembic, tests)."""

from app.jobs.models import Job, JobEvent
from app.queues.models import QueueMessage
from app.tenants.models import ApiKey, Tenant, WebhookSecret

__all__ = ["ApiKey", "Job", "JobEvent", "QueueMessage", "Tenant", "WebhookSecret"]
