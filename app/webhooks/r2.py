"""R2 event notifications → `process-image` jobs, per tenant rules (bucket + key prefix).

R2 delivers notifications through a queue at least once, so one object version (bucket +
key + eTag) is an event's identity: a redelivery finds the stored event and its job.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.core.clock import utcnow
from app.core.errors import Conflict, NotFound
from app.core.ids import uuid7
from app.jobs.payloads import ProcessImageJob
from app.tenants import service as tenants_service
from app.webhooks.models import R2Rule
from app.webhooks.schemas import R2Notification, R2RuleCreate

# object-create actions; deletes (DeleteObject, LifecycleDeletion) make no image job.
CREATE_ACTIONS = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload"})


def object_identity(notification: R2Notification) -> str:
    """A stable id for one object version (what deduplicates redeliveries)."""
    obj = notification.object
    raw = f"{notification.bucket}\n{obj.key}\n{obj.eTag or ''}".encode()
    return "r2:" + hashlib.sha256(raw).hexdigest()


def match_rule(rules: list[R2Rule], notification: R2Notification) -> R2Rule | None:
    """The rule with the longest prefix matching the object, if any."""
    candidates = [
        r
        for r in rules
        if r.bucket == notification.bucket and notification.object.key.startswith(r.prefix)
    ]
    return max(candidates, key=lambda r: len(r.prefix), default=None)


def plan_job(rule: R2Rule, notification: R2Notification) -> ProcessImageJob | None:
    if notification.action not in CREATE_ACTIONS or not notification.object.eTag:
        return None
    return ProcessImageJob.model_validate(
        {"type": "process-image", "key": notification.object.key, "operations": rule.operations}
    )


def ignored_hint(*, ignored: int, unmatched: int, rules: int) -> str | None:
    """Why notifications made no job, for the integrator reading the answer."""
    if not ignored:
        return None
    if rules == 0:
        return (
            "the tenant has no R2 rule: add one (POST /v1/admin/tenants/{tenant_id}/r2-rules) "
            "for the bucket and key prefix"
        )
    if unmatched:
        return (
            f"{unmatched} notification(s) matched no R2 rule (bucket and key prefix); "
            "see `unmatched`"
        )
    return "only object-create notifications with an eTag make jobs; the others are ignored"


async def list_rules(session: AsyncSession, *, tenant_id: str) -> list[R2Rule]:
    stmt = select(R2Rule).where(R2Rule.tenant_id == tenant_id)
    rows = await session.execute(stmt.order_by(col(R2Rule.bucket), col(R2Rule.prefix)))
    return list(rows.scalars().all())


async def add_rule(session: AsyncSession, *, tenant_id: str, rule: R2RuleCreate) -> R2Rule:
    await tenants_service.get_tenant(session, tenant_id=tenant_id)
    for existing in await list_rules(session, tenant_id=tenant_id):
        if existing.bucket == rule.bucket and existing.prefix == rule.prefix:
            raise Conflict(f"a rule for {rule.bucket}/{rule.prefix}* exists already")
    operations: list[dict[str, Any]] = [op.model_dump(mode="json") for op in rule.operations]
    row = R2Rule(
        id=uuid7(),
        tenant_id=tenant_id,
        bucket=rule.bucket,
        prefix=rule.prefix,
        operations=operations,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row


async def delete_rule(session: AsyncSession, *, tenant_id: str, rule_id: str) -> None:
    row = await session.get(R2Rule, rule_id)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"R2 rule {rule_id} does not exist")
    await session.delete(row)
    await session.flush()
