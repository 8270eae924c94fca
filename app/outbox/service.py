"""Writing to the outbox inside the job's transaction (services never commit), and its backlog."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import jsontext
from app.core.db import SessionMaker, table_of
from app.outbox import counters as outbox_counters
from app.outbox.models import OutboxMessage
from app.queues.base import OutgoingMessage

_table = table_of(OutboxMessage)


async def stage(
    session: AsyncSession, queue: str, messages: Sequence[OutgoingMessage], *, now_ms: int
) -> None:
    """Store `messages` for `queue` as outbox rows, in the caller's transaction."""
    rows = []
    for message in messages:
        body = message.encoded
        if body is None:
            body = jsontext.dumps(message.body)
        rows.append(
            {
                "job_id": message.body["job_id"],
                "queue": queue,
                "body": body,
                "size_bytes": len(body.encode()),
                "delay_seconds": message.delay_seconds or 0,
                "created_ms": now_ms,
                "available_at_ms": now_ms,
                "attempts": 0,
            }
        )
    await session.execute(insert(_table), rows)


async def pending_by_queue(sessionmaker: SessionMaker) -> dict[str, tuple[int, int]]:
    """Unpublished outbox rows per queue: (messages, bytes), from the counter rows."""
    async with sessionmaker() as session:
        pending = await outbox_counters.unpublished(session)
        await session.commit()
    return pending
