"""A restarted emulator keeps its queues, consumers and messages (registry from the DB)."""

from __future__ import annotations

import pytest
from cloudflare import AsyncCloudflare
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_sessionmaker
from app.queues.local import LocalQueueEngine
from app.queues.topology import DEFAULT_RETENTION_SECONDS, QueueSettings
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator

pytestmark = pytest.mark.asyncio


@pytest.fixture
def emulator(database: tuple[str, str | None]) -> Emulator:
    """Overrides the module-wide emulator: this test stops and starts its own."""
    return Emulator(start_emulator(emulator_env(database)))


async def test_restart_keeps_registry_and_messages(emulator: Emulator) -> None:
    try:
        async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url) as cf:
            queue = await cf.queues.create(account_id=ACCOUNT, queue_name="durable")
            assert queue is not None
            assert queue.queue_id
            queue_id = queue.queue_id
            await cf.queues.consumers.create(
                queue_id,
                account_id=ACCOUNT,
                type="http_pull",
                dead_letter_queue="durable-dlq",
                settings={"max_retries": 0},
            )
            await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_delay": 0})
            await cf.queues.messages.push(queue_id, account_id=ACCOUNT, body={"kept": True})

        emulator.process.terminate()
        emulator.process.start()

        async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url) as cf:
            names = sorted([q.queue_name or "" async for q in cf.queues.list(account_id=ACCOUNT)])
            assert names == ["durable", "durable-dlq"]
            consumers = [c async for c in cf.queues.consumers.list(queue_id, account_id=ACCOUNT)]
            assert [c.dead_letter_queue for c in consumers] == ["durable-dlq"]
            pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
            assert pulled is not None
            assert pulled.messages is not None
            assert len(pulled.messages) == 1
            # The consumer's settings were declared again: max_retries 0 dead-letters at once.
            lease = pulled.messages[0].lease_id
            assert lease
            acked = await cf.queues.messages.ack(
                queue_id, account_id=ACCOUNT, retries=[{"lease_id": lease}]
            )
            assert acked is not None
            assert acked.retry_count == 1
            page = await cf.queues.list(account_id=ACCOUNT, extra_query={"name": "durable-dlq"})
            dlq_id = page.result[0].queue_id
            assert dlq_id
            metrics = await cf.queues.get_metrics(dlq_id, account_id=ACCOUNT)
            assert metrics is not None
            assert metrics.backlog_count == 1
    finally:
        emulator.reset()
        emulator.close()


async def test_paused_is_the_engines_state_and_survives_a_restart(
    emulator: Emulator, db_engine: AsyncEngine
) -> None:
    try:
        async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url) as cf:
            queue = await cf.queues.create(account_id=ACCOUNT, queue_name="held")
            assert queue is not None
            assert queue.queue_id
            queue_id = queue.queue_id
            await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_paused": True})
        # The local engine on the same database sees the emulator's pause: one state.
        engine = LocalQueueEngine(
            create_sessionmaker(db_engine),
            {queue_id: QueueSettings(queue_id, 0, DEFAULT_RETENTION_SECONDS, 3, None, 0)},
        )
        assert (await engine.stats(queue_id)).paused is True

        emulator.process.terminate()
        emulator.process.start()

        async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url) as cf:
            again = await cf.queues.get(queue_id, account_id=ACCOUNT)
            assert again is not None
            assert again.settings is not None
            assert again.settings.delivery_paused is True
            await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_paused": False})
        assert (await engine.stats(queue_id)).paused is False
    finally:
        emulator.reset()
        emulator.close()
