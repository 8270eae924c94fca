"""Unpublished outbox rows per queue, read from trigger-kept counters (`app.core.counters`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import counters
from app.core.counters import CountedRows

UNPUBLISHED = CountedRows(
    kind="outbox_pending",
    table="outbox_message",
    key="queue",
    size="size_bytes",
    condition="{row}.published_at IS NULL",
    watch=("published_at",),
)


async def unpublished(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """(rows, bytes) not yet published, per queue that has any."""
    found = await counters.totals(session, UNPUBLISHED.kind)
    return {queue: totals for queue, totals in found.items() if totals[0]}
