"""Recording webhook events and the jobs they make. Services never commit.

`record_event` writes the event row first (its unique (source, tenant, external id) key is
the replay guard) and then the jobs, in the caller's transaction: the router commits both
before it answers 2xx, so a sender only hears success for work that is stored. A
concurrent duplicate blocks on the unique key and then answers with the winner's jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.core.clock import utcnow
from app.core.ids import uuid7
from app.core.security import SecretBox
from app.jobs.payloads import JobOptions
from app.jobs.submitter import JobSubmitter, count_accepted
from app.tenants import service as tenants_service
from app.tenants.schemas import Principal, Scope
from app.webhooks.models import UnsignedWebhookToken, WebhookEvent
from app.webhooks.verifiers import decode_secret

events_total = Counter(
    "jobgate_webhook_events_total",
    "Webhook deliveries accepted, by source and outcome (accepted, replay, ignored).",
    ["source", "outcome"],
)
refusals_total = Counter(
    "jobgate_webhook_refusals_total",
    "Webhook deliveries refused, by source and reason.",
    ["source", "reason"],
)

# Verified against when the tenant is unknown, so both paths do the same work.
_DUMMY_KEY = secrets.token_bytes(24)
_DUMMY_TOKEN_HASH = hashlib.sha256(secrets.token_bytes(32)).hexdigest()


@dataclass(frozen=True, slots=True)
class Recorded:
    job_ids: list[str]
    replay: bool


async def find_event(
    session: AsyncSession, *, source: str, tenant_id: str, external_id: str
) -> WebhookEvent | None:
    stmt = select(WebhookEvent).where(
        WebhookEvent.source == source,
        WebhookEvent.tenant_id == tenant_id,
        WebhookEvent.external_id == external_id,
    )
    return (await session.execute(stmt)).scalars().first()


async def known_events(
    session: AsyncSession, *, source: str, tenant_id: str, external_ids: Collection[str]
) -> set[str]:
    """Which of `external_ids` were recorded already (their redeliveries make no job)."""
    if not external_ids:
        return set()
    stmt = select(WebhookEvent.external_id).where(
        WebhookEvent.source == source,
        WebhookEvent.tenant_id == tenant_id,
        col(WebhookEvent.external_id).in_(set(external_ids)),
    )
    return set((await session.execute(stmt)).scalars().all())


async def signing_keys(
    session: AsyncSession, *, tenant_id: str, box: SecretBox
) -> tuple[list[bytes], bool]:
    """(HMAC keys to try, whether the tenant exists); a dummy key for an unknown tenant."""
    secrets_ = await tenants_service.active_webhook_secrets(session, tenant_id=tenant_id, box=box)
    keys = [decode_secret(s) for s in secrets_]
    return (keys, True) if keys else ([_DUMMY_KEY], False)


async def record_event(
    session: AsyncSession,
    *,
    submitter: JobSubmitter,
    source: str,
    tenant_id: str,
    external_id: str,
    event_type: str,
    requests: list[tuple[JobOptions, str | None]],
) -> Recorded:
    """Store the event and submit its jobs, or return the jobs of the first delivery."""
    existing = await find_event(
        session, source=source, tenant_id=tenant_id, external_id=external_id
    )
    if existing is not None:
        events_total.labels(source=source, outcome="replay").inc()
        return Recorded(job_ids=list(existing.job_ids), replay=True)
    event = WebhookEvent(
        id=uuid7(),
        source=source,
        tenant_id=tenant_id,
        external_id=external_id,
        event_type=event_type,
        job_ids=[],
        received_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(event)
            await session.flush()
    except IntegrityError:
        winner = await find_event(
            session, source=source, tenant_id=tenant_id, external_id=external_id
        )
        if winner is None:
            raise
        events_total.labels(source=source, outcome="replay").inc()
        return Recorded(job_ids=list(winner.job_ids), replay=True)
    principal = Principal(tenant_id=tenant_id, scopes=frozenset({Scope.jobs_write.value}))
    submitted = []
    if requests:
        submitted = await submitter.submit(session, principal, requests, batch=True)
    event.job_ids = [item.job.id for item in submitted]
    await session.flush()
    count_accepted(submitted)
    events_total.labels(source=source, outcome="accepted" if requests else "ignored").inc()
    return Recorded(job_ids=event.job_ids, replay=False)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def enable_unsigned_route(session: AsyncSession, *, tenant_id: str) -> str:
    """Opt the tenant in to the unsigned route; returns a new URL token (old one stops)."""
    await tenants_service.get_tenant(session, tenant_id=tenant_id)
    token = secrets.token_urlsafe(32)
    row = await session.get(UnsignedWebhookToken, tenant_id)
    if row is None:
        session.add(
            UnsignedWebhookToken(
                tenant_id=tenant_id, token_hash=hash_token(token), created_at=utcnow()
            )
        )
    else:
        row.token_hash = hash_token(token)
        row.created_at = utcnow()
    await session.flush()
    return token


async def disable_unsigned_route(session: AsyncSession, *, tenant_id: str) -> bool:
    row = await session.get(UnsignedWebhookToken, tenant_id)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


async def check_unsigned_token(session: AsyncSession, *, tenant_id: str, token: str) -> bool | None:
    """None: the tenant has not opted in (or does not exist); else whether the token matches."""
    row = await session.get(UnsignedWebhookToken, tenant_id)
    expected = row.token_hash if row is not None else _DUMMY_TOKEN_HASH
    matches = hmac.compare_digest(hash_token(token), expected)
    return None if row is None else matches
