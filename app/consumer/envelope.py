"""What the queue carries for a job, and one leased delivery of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.queues.base import LeasedMessage


@dataclass(frozen=True, slots=True)
class Envelope:
    """The message body the gateway sends: `{job_id, tenant_id, type, payload, ...}`."""

    job_id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    idempotency_key: str | None = None
    trace: dict[str, Any] | None = None

    @classmethod
    def parse(cls, body: Any) -> Envelope | None:
        if not isinstance(body, dict):
            return None
        job_id, tenant_id, job_type = body.get("job_id"), body.get("tenant_id"), body.get("type")
        payload = body.get("payload")
        if not all(isinstance(v, str) and v for v in (job_id, tenant_id, job_type)):
            return None
        if not isinstance(payload, dict):
            return None
        trace = body.get("trace")
        key = body.get("idempotency_key")
        return cls(
            job_id=str(job_id),
            tenant_id=str(tenant_id),
            type=str(job_type),
            payload=payload,
            idempotency_key=key if isinstance(key, str) else None,
            trace=trace if isinstance(trace, dict) else None,
        )


@dataclass(slots=True)
class Delivery:
    """A leased message, its parsed envelope (None: not a job) and when its lease ends."""

    message: LeasedMessage
    envelope: Envelope | None
    lease_expires_ms: int
    received_ms: int

    @property
    def lease_id(self) -> str:
        return self.message.lease_id

    @property
    def tenant(self) -> str:
        return self.envelope.tenant_id if self.envelope else ""
