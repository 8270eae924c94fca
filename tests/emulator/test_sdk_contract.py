"""Contract tests: the official `cloudflare` SDK, unchanged, against `jobgate emulator`."""

from __future__ import annotations

import base64
import json
from typing import Any

import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator

pytestmark = pytest.mark.asyncio


async def _queue(cf: AsyncCloudflare, name: str = "jobs", **settings: Any) -> str:
    extra = {"settings": settings} if settings else None
    queue = await cf.queues.create(account_id=ACCOUNT, queue_name=name, extra_body=extra)
    assert queue is not None
    assert queue.queue_id is not None
    return queue.queue_id


async def _pull_queue(cf: AsyncCloudflare, name: str = "jobs", **settings: Any) -> str:
    queue_id = await _queue(cf, name)
    consumer_settings = {"max_retries": 3, **settings}
    await cf.queues.consumers.create(
        queue_id, account_id=ACCOUNT, type="http_pull", settings=consumer_settings
    )
    return queue_id


def _code(exc: cloudflare.APIStatusError) -> int:
    body = exc.body
    assert isinstance(body, dict), body
    code: int = body["errors"][0]["code"]
    return code


def _decode(message: Any) -> Any:
    return json.loads(base64.b64decode(message.body))


class TestQueues:
    async def test_create_list_get_update_edit_delete(self, cf: AsyncCloudflare) -> None:
        created = await cf.queues.create(
            account_id=ACCOUNT,
            queue_name="orders",
            extra_body={"settings": {"delivery_delay": 5, "message_retention_period": 3600}},
        )
        assert created is not None
        assert created.queue_id is not None
        assert len(created.queue_id) == 32
        assert int(created.queue_id, 16) >= 0
        assert created.queue_name == "orders"
        assert created.settings is not None
        assert created.settings.delivery_delay == 5
        assert created.settings.message_retention_period == 3600
        assert created.settings.delivery_paused is False
        assert created.created_on
        assert created.created_on.endswith("Z")
        await _queue(cf, "other")

        listed = [q.queue_name async for q in cf.queues.list(account_id=ACCOUNT)]
        assert listed == ["orders", "other"]
        filtered = await cf.queues.list(account_id=ACCOUNT, extra_query={"name": "other"})
        assert [q.queue_name for q in filtered.result] == ["other"]

        got = await cf.queues.get(created.queue_id, account_id=ACCOUNT)
        assert got is not None
        assert got.queue_name == "orders"

        # PATCH merges: pausing keeps the other settings.
        paused = await cf.queues.edit(
            created.queue_id, account_id=ACCOUNT, settings={"delivery_paused": True}
        )
        assert paused is not None
        assert paused.settings is not None
        assert paused.settings.delivery_paused is True
        assert paused.settings.delivery_delay == 5

        # PUT replaces: unset settings go back to their defaults.
        updated = await cf.queues.update(
            created.queue_id,
            account_id=ACCOUNT,
            queue_name="orders-v2",
            settings={"delivery_delay": 10},
        )
        assert updated is not None
        assert updated.settings is not None
        assert updated.queue_name == "orders-v2"
        assert updated.settings.delivery_delay == 10
        assert updated.settings.delivery_paused is False
        assert updated.settings.message_retention_period == 345_600

        deleted = await cf.queues.delete(created.queue_id, account_id=ACCOUNT)
        assert deleted.success is True
        with pytest.raises(cloudflare.NotFoundError) as info:
            await cf.queues.get(created.queue_id, account_id=ACCOUNT)
        assert _code(info.value) == 10104

    async def test_duplicate_name_is_a_conflict(self, cf: AsyncCloudflare) -> None:
        await _queue(cf, "jobs")
        with pytest.raises(cloudflare.ConflictError):
            await _queue(cf, "jobs")


class TestConsumers:
    async def test_consumer_crud_and_dead_letter_queue_auto_created(
        self, cf: AsyncCloudflare
    ) -> None:
        queue_id = await _queue(cf, "jobs")
        consumer = await cf.queues.consumers.create(
            queue_id,
            account_id=ACCOUNT,
            type="http_pull",
            dead_letter_queue="jobs-dlq",
            settings={"batch_size": 20, "max_retries": 5, "visibility_timeout_ms": 60_000},
        )
        assert consumer is not None
        assert consumer.type == "http_pull"
        assert consumer.queue_name == "jobs"
        assert consumer.dead_letter_queue == "jobs-dlq"
        assert consumer.settings is not None
        assert consumer.settings.batch_size == 20
        assert consumer.settings.retry_delay == 0  # a default
        assert consumer.consumer_id is not None

        names = [q.queue_name async for q in cf.queues.list(account_id=ACCOUNT)]
        assert "jobs-dlq" in names

        listed = [c async for c in cf.queues.consumers.list(queue_id, account_id=ACCOUNT)]
        assert [c.consumer_id for c in listed] == [consumer.consumer_id]
        queue = await cf.queues.get(queue_id, account_id=ACCOUNT)
        assert queue is not None
        assert queue.consumers_total_count == 1

        # One http_pull consumer per queue: the pull API names no consumer (docs/emulator.md).
        with pytest.raises(cloudflare.BadRequestError) as refused:
            await cf.queues.consumers.create(queue_id, account_id=ACCOUNT, type="http_pull")
        assert _code(refused.value) == 10105

        updated = await cf.queues.consumers.update(
            consumer.consumer_id,
            account_id=ACCOUNT,
            queue_id=queue_id,
            type="worker",
            script_name="consumer-worker",
            settings={"max_retries": 1, "max_wait_time_ms": 2000},
        )
        assert updated is not None
        assert updated.type == "worker"
        assert updated.consumer_id == consumer.consumer_id
        assert updated.dead_letter_queue == ""
        got = await cf.queues.consumers.get(
            consumer.consumer_id, account_id=ACCOUNT, queue_id=queue_id
        )
        assert got is not None
        assert got.type == "worker"
        assert got.script_name == "consumer-worker"
        assert got.settings is not None
        assert got.settings.max_wait_time_ms == 2000
        assert got.settings.max_concurrency is None

        await cf.queues.consumers.delete(
            consumer.consumer_id, account_id=ACCOUNT, queue_id=queue_id
        )
        with pytest.raises(cloudflare.NotFoundError):
            await cf.queues.consumers.get(
                consumer.consumer_id, account_id=ACCOUNT, queue_id=queue_id
            )


class TestMessages:
    async def test_push_batch_pull_base64(self, cf: AsyncCloudflare) -> None:
        queue_id = await _pull_queue(cf)
        pushed = await cf.queues.messages.push(
            queue_id, account_id=ACCOUNT, body={"job": "resize", "n": 1}, content_type="json"
        )
        assert pushed is not None
        assert pushed.metadata is not None
        assert pushed.metadata.metrics is not None
        assert pushed.metadata.metrics.backlog_count == 1
        batch = await cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            messages=[
                {"body": "hello", "content_type": "text"},
                {"body": {"n": 2}, "content_type": "json"},
            ],
        )
        assert batch is not None
        assert batch.metadata is not None
        assert batch.metadata.metrics is not None
        assert batch.metadata.metrics.backlog_count == 3

        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=10)
        assert pulled is not None
        assert pulled.messages is not None
        assert pulled.message_backlog_count == 3
        by_type: dict[str, list[Any]] = {"json": [], "text": []}
        for message in pulled.messages:
            assert isinstance(message.metadata, dict)
            assert message.metadata["CF-sourceMessageSource"] == "api"
            by_type[message.metadata["CF-Content-Type"]].append(message)
            assert message.attempts == 1
            assert message.lease_id
            assert message.id
            assert len(message.id) == 32
            assert message.timestamp_ms
            assert message.timestamp_ms > 0
        assert sorted(json.dumps(_decode(m)) for m in by_type["json"]) == [
            '{"job": "resize", "n": 1}',
            '{"n": 2}',
        ]
        assert [m.body for m in by_type["text"]] == ["hello"]

        # Leased: a second pull gets nothing.
        again = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=10)
        assert again is not None
        assert again.messages == []

    async def test_pull_plain_json_bodies(self, cf: AsyncCloudflare, emulator: Emulator) -> None:
        emulator.configure(json_body="plain")
        queue_id = await _pull_queue(cf)
        await cf.queues.messages.push(queue_id, account_id=ACCOUNT, body={"a": [1, 2]})
        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
        assert pulled is not None
        assert pulled.messages
        assert json.loads(pulled.messages[0].body or "") == {"a": [1, 2]}

    async def test_ack_retry_with_delay_and_lease_expiry(
        self, cf: AsyncCloudflare, emulator: Emulator
    ) -> None:
        queue_id = await _pull_queue(cf)
        await cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            messages=[{"body": {"i": i}, "content_type": "json"} for i in range(3)],
        )
        pulled = await cf.queues.messages.pull(
            queue_id, account_id=ACCOUNT, batch_size=3, visibility_timeout_ms=30_000
        )
        assert pulled is not None
        assert pulled.messages is not None
        done, failed, forgotten = pulled.messages
        assert done.lease_id
        assert failed.lease_id

        acked = await cf.queues.messages.ack(
            queue_id,
            account_id=ACCOUNT,
            acks=[{"lease_id": done.lease_id}, {"lease_id": "not-a-lease"}],
            retries=[{"lease_id": failed.lease_id, "delay_seconds": 60}],
        )
        assert acked is not None
        assert acked.ack_count == 1
        assert acked.retry_count == 1
        assert acked.warnings is not None
        assert "not-a-lease" in acked.warnings

        # The retry waits out its delay; the forgotten lease is still held.
        empty = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=10)
        assert empty is not None
        assert empty.messages == []
        emulator.advance(31)
        expired = await cf.queues.messages.pull(
            queue_id, account_id=ACCOUNT, batch_size=10, visibility_timeout_ms=600_000
        )
        assert expired is not None
        assert expired.messages is not None
        assert [(m.id, m.attempts) for m in expired.messages] == [(forgotten.id, 2)]
        emulator.advance(30)
        retried = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=10)
        assert retried is not None
        assert retried.messages is not None
        assert [(m.id, m.attempts) for m in retried.messages] == [(failed.id, 2)]

        # A stale lease of a still-stored message still acks (Cloudflare is permissive).
        assert forgotten.lease_id
        late = await cf.queues.messages.ack(
            queue_id, account_id=ACCOUNT, acks=[{"lease_id": forgotten.lease_id}]
        )
        assert late is not None
        assert late.ack_count == 1
        assert not late.warnings

    async def test_retries_exhausted_go_to_the_dead_letter_queue(self, cf: AsyncCloudflare) -> None:
        queue_id = await _queue(cf, "jobs")
        await cf.queues.consumers.create(
            queue_id,
            account_id=ACCOUNT,
            type="http_pull",
            dead_letter_queue="jobs-dlq",
            settings={"max_retries": 1},
        )
        await cf.queues.messages.push(queue_id, account_id=ACCOUNT, body={"poison": True})
        for attempt in (1, 2):  # max_retries + 1 deliveries
            pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
            assert pulled is not None
            assert pulled.messages is not None
            assert [m.attempts for m in pulled.messages] == [attempt]
            lease = pulled.messages[0].lease_id
            assert lease
            await cf.queues.messages.ack(
                queue_id, account_id=ACCOUNT, retries=[{"lease_id": lease, "delay_seconds": 0}]
            )
        metrics = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert metrics is not None
        assert metrics.backlog_count == 0
        page = await cf.queues.list(account_id=ACCOUNT, extra_query={"name": "jobs-dlq"})
        dlq_id = page.result[0].queue_id
        assert dlq_id
        peeked = await cf.queues.messages.peek(dlq_id, account_id=ACCOUNT)
        assert peeked is not None
        assert peeked.messages is not None
        assert [_decode(m) for m in peeked.messages] == [{"poison": True}]

    async def test_delays_message_batch_and_queue_default(
        self, cf: AsyncCloudflare, emulator: Emulator
    ) -> None:
        queue_id = await _pull_queue(cf)
        await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_delay": 120})
        await cf.queues.messages.push(
            queue_id, account_id=ACCOUNT, body="queue", content_type="text"
        )
        await cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            delay_seconds=60,
            messages=[
                {"body": "batch", "content_type": "text"},
                {"body": "now", "content_type": "text", "delay_seconds": 0},
            ],
        )

        async def bodies() -> list[str | None]:
            pulled = await cf.queues.messages.pull(
                queue_id, account_id=ACCOUNT, batch_size=10, visibility_timeout_ms=3_600_000
            )
            assert pulled is not None
            assert pulled.messages is not None
            return [m.body for m in pulled.messages]

        assert await bodies() == ["now"]
        emulator.advance(61)
        assert await bodies() == ["batch"]
        emulator.advance(60)
        assert await bodies() == ["queue"]

    async def test_metrics(self, cf: AsyncCloudflare) -> None:
        queue_id = await _pull_queue(cf)
        empty = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert empty is not None
        assert (empty.backlog_count, empty.backlog_bytes, empty.oldest_message_timestamp_ms) == (
            0,
            0,
            0,
        )
        await cf.queues.messages.push(
            queue_id, account_id=ACCOUNT, body="abcd", content_type="text"
        )
        await cf.queues.messages.push(queue_id, account_id=ACCOUNT, body={"k": 1})
        metrics = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert metrics is not None
        assert metrics.backlog_count == 2
        assert metrics.backlog_bytes == len("abcd") + len('{"k":1}')
        assert metrics.oldest_message_timestamp_ms > 0
        # In-flight messages still count until acked.
        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=1)
        assert pulled is not None
        assert pulled.messages
        assert pulled.messages[0].lease_id
        in_flight = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert in_flight is not None
        assert in_flight.backlog_count == 2
        lease = pulled.messages[0].lease_id
        await cf.queues.messages.ack(queue_id, account_id=ACCOUNT, acks=[{"lease_id": lease}])
        after = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert after is not None
        assert after.backlog_count == 1

    async def test_purge(self, cf: AsyncCloudflare, emulator: Emulator) -> None:
        queue_id = await _pull_queue(cf)
        status = await cf.queues.purge.status(queue_id, account_id=ACCOUNT)
        assert status is not None
        assert status.started_at is None
        await cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            messages=[
                {"body": "now", "content_type": "text"},
                {"body": "later", "content_type": "text", "delay_seconds": 3600},
            ],
        )
        await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=1)  # one leased
        purged = await cf.queues.purge.start(
            queue_id, account_id=ACCOUNT, delete_messages_permanently=True
        )
        assert purged is not None
        assert purged.queue_id == queue_id
        metrics = await cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert metrics is not None
        assert metrics.backlog_count == 0
        status = await cf.queues.purge.status(queue_id, account_id=ACCOUNT)
        assert status is not None
        assert status.completed == "true"
        assert status.started_at
        emulator.advance(3601)
        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
        assert pulled is not None
        assert pulled.messages == []

    async def test_peek_does_not_lease_and_purge_by_ref(self, cf: AsyncCloudflare) -> None:
        queue_id = await _pull_queue(cf)
        await cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            messages=[{"body": f"m{i}", "content_type": "text"} for i in range(3)],
        )
        peeked = await cf.queues.messages.peek(queue_id, account_id=ACCOUNT, batch_size=2)
        assert peeked is not None
        assert peeked.messages is not None
        assert len(peeked.messages) == 2
        assert all(m.ref and m.attempts == 0 for m in peeked.messages)
        again = await cf.queues.messages.peek(queue_id, account_id=ACCOUNT, batch_size=10)
        assert again is not None
        assert again.messages is not None
        assert len(again.messages) == 3

        ref = peeked.messages[0].ref
        assert ref
        purged = await cf.queues.messages.purge(
            queue_id, account_id=ACCOUNT, refs=[{"ref": ref}, {"ref": "bogus"}]
        )
        assert purged is not None
        assert purged.warnings is not None
        assert list(purged.warnings) == ["bogus"]
        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=10)
        assert pulled is not None
        assert pulled.messages is not None
        purged_id = peeked.messages[0].id
        assert sorted(m.id or "" for m in pulled.messages) == sorted(
            m.id or "" for m in again.messages if m.id != purged_id
        )
        assert len(pulled.messages) == 2

    async def test_paused_queue_accepts_but_refuses_pulls(self, cf: AsyncCloudflare) -> None:
        queue_id = await _pull_queue(cf)
        await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_paused": True})
        await cf.queues.messages.push(queue_id, account_id=ACCOUNT, body={"held": True})
        with pytest.raises(cloudflare.RateLimitError) as info:  # 10252 is a 429-class code
            await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
        assert _code(info.value) == 10252
        assert info.value.body["errors"][0]["message"] == "queue_delivery_paused"  # type: ignore[index]
        await cf.queues.edit(queue_id, account_id=ACCOUNT, settings={"delivery_paused": False})
        pulled = await cf.queues.messages.pull(queue_id, account_id=ACCOUNT)
        assert pulled is not None
        assert pulled.messages
        assert len(pulled.messages) == 1


class TestResilience:
    async def test_sdk_retries_through_injected_faults(self, emulator: Emulator) -> None:
        async with AsyncCloudflare(api_token=TOKEN, base_url=emulator.api_url, max_retries=3) as cf:
            queue_id = await _pull_queue(cf)
            emulator.faults(kind="error", count=1, match="/messages/batch")
            emulator.faults(kind="rate_limit", count=1, retry_after=1, match="/messages/batch")
            batch = await cf.queues.messages.bulk_push(
                queue_id, account_id=ACCOUNT, messages=[{"body": "x", "content_type": "text"}]
            )
            assert batch is not None
            assert batch.metadata is not None
            assert batch.metadata.metrics is not None
            assert batch.metadata.metrics.backlog_count == 1
            assert emulator.control("GET", "state")["faults"] == []
