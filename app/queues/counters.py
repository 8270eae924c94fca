"""Messages and bytes stored per queue, read from trigger-kept counters (`app.core.counters`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from app.core import counters
from app.core.counters import CountedRows

# Every stored message counts: visible, delayed and in flight (Cloudflare's backlog).
QUEUE_MESSAGES = CountedRows(
    kind="queue_message", table="queue_message", key="queue", size="size_bytes"
)


async def stored(session: AsyncSession, queues: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(messages, bytes) stored in each of `queues` (0, 0 for an empty or unknown one)."""
    names = list(queues)
    found = await counters.totals(session, QUEUE_MESSAGES.kind, names)
    return {name: found.get(name, (0, 0)) for name in names}
