"""Taking a retried dead job's copy out of its dead letter queue, on either backend.

- Local engine: the dead letter queue is a table in the job store's database, so the copy
  is deleted in the retry's own transaction (both happen, or neither).
- Cloudflare: a queue offers no delete by content, so the dead letter queue is read through
  an HTTP pull consumer (created on first use): matching copies are acked, every other
  message is held while the scan goes on, then released at once (retry, delay 0). Each scan
  counts one delivery against the messages it passes over, so the pull consumer allows
  Cloudflare's maximum of 100 retries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import delete, or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import table_of
from app.queues.base import MAX_PULL_BATCH, QueueBackend, RetryRequest
from app.queues.cloudflare import CloudflareQueues
from app.queues.errors import QueueNotFound
from app.queues.models import QueueMessage

log = logging.getLogger("jobgate.jobs")
_messages = table_of(QueueMessage)
_CHUNK = 100


def _job_id_pattern(job_id: str) -> str:
    # Envelopes are stored as compact JSON; ids are UUIDs (no LIKE wildcards in them).
    return f'%"job_id":"{job_id}"%'


class LocalDeadLetters:
    """Dead letter queues that are tables of the job store (the local engine)."""

    async def remove_in_transaction(
        self, session: AsyncSession, dead_letters: Mapping[str, Sequence[str]]
    ) -> None:
        for queue, job_ids in dead_letters.items():
            ids = sorted(set(job_ids))
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                await session.execute(
                    delete(_messages).where(
                        _messages.c.queue == queue,
                        or_(*(_messages.c.body.like(_job_id_pattern(i)) for i in chunk)),
                    )
                )

    async def remove_after_commit(self, dead_letters: Mapping[str, Sequence[str]]) -> int:
        return 0  # done in the transaction


class CloudflareDeadLetters:
    """Dead letter queues on Cloudflare, read through an HTTP pull consumer."""

    # Scan at most this many messages per dead letter queue and retry request.
    MAX_SCANNED = 10_000
    VISIBILITY_TIMEOUT_MS = 120_000

    def __init__(
        self, backend: CloudflareQueues, *, account_id: str, api_token: str, base_url: str
    ) -> None:
        self._backend = backend
        self._account_id = account_id
        self._api_token = api_token
        self._base_url = base_url
        self._pullable: set[str] = set()

    async def remove_in_transaction(
        self, session: AsyncSession, dead_letters: Mapping[str, Sequence[str]]
    ) -> None:
        """Nothing: the queue is not in our database (see `remove_after_commit`)."""

    async def remove_after_commit(self, dead_letters: Mapping[str, Sequence[str]]) -> int:
        removed = 0
        for queue, job_ids in dead_letters.items():
            removed += await self._remove(self._backend, queue, set(job_ids))
        return removed

    async def _remove(self, backend: QueueBackend, queue: str, wanted: set[str]) -> int:
        await self._ensure_pull_consumer(queue)
        found: set[str] = set()
        held: list[str] = []
        removed = 0
        try:
            while len(held) + removed < self.MAX_SCANNED and not wanted <= found:
                pulled = await backend.pull(
                    queue,
                    batch_size=MAX_PULL_BATCH,
                    visibility_timeout_ms=self.VISIBILITY_TIMEOUT_MS,
                )
                if not pulled.messages:
                    break
                acks = []
                for message in pulled.messages:
                    body = message.body
                    job_id = body.get("job_id") if isinstance(body, dict) else None
                    if job_id in wanted:
                        acks.append(message.lease_id)
                        found.add(job_id)
                    else:
                        held.append(message.lease_id)
                if acks:
                    result = await backend.ack(queue, acks=acks)
                    removed += result.ack_count
        finally:
            for start in range(0, len(held), MAX_PULL_BATCH):
                chunk = held[start : start + MAX_PULL_BATCH]
                await backend.ack(
                    queue,
                    retries=[RetryRequest(lease_id=lease, delay_seconds=0) for lease in chunk],
                )
        if not wanted <= found:
            log.info(
                "dead letter queue %s: %d retried jobs had no copy", queue, len(wanted - found)
            )
        return removed

    async def _ensure_pull_consumer(self, queue: str) -> None:
        if queue in self._pullable:
            return
        from cloudflare import AsyncCloudflare, ConflictError

        try:
            queue_id = self._backend.queue_id(queue)
        except QueueNotFound:
            await self._backend.refresh_queue_ids()
            queue_id = self._backend.queue_id(queue)
        sdk = AsyncCloudflare(api_token=self._api_token, base_url=self._base_url, max_retries=3)
        try:
            kinds = [
                c.type
                async for c in sdk.queues.consumers.list(queue_id, account_id=self._account_id)
            ]
            if "http_pull" not in kinds:
                try:
                    await sdk.queues.consumers.create(
                        queue_id,
                        account_id=self._account_id,
                        type="http_pull",
                        settings={
                            "batch_size": MAX_PULL_BATCH,
                            "max_retries": 100,
                            "retry_delay": 0,
                            "visibility_timeout_ms": self.VISIBILITY_TIMEOUT_MS,
                        },
                    )
                except ConflictError:
                    pass  # created concurrently by another gateway
        finally:
            await sdk.close()
        self._pullable.add(queue)
