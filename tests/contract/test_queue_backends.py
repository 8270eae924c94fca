"""The one conformance suite every `QueueBackend` passes (Cloudflare Queues' semantics).

The tests speak only the `QueueBackend` protocol, plus a small `BackendHarness` per backend
that declares queues and moves time forward. Adding a backend is one branch in the `harness`
fixture: the Cloudflare client against the emulator would declare queues and consumers over
the REST API and advance the emulator's clock over HTTP.

The contract: docs/cloudflare-queues.md (endpoints, limits, error codes, delivery semantics).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.clock import ManualClock
from app.core.db import create_sessionmaker
from app.queues.base import (
    DEFAULT_PULL_BATCH,
    AckResult,
    LeasedMessage,
    OutgoingMessage,
    QueueBackend,
    RetryRequest,
    SupportsQueueControl,
)
from app.queues.cloudflare import CloudflareQueues, RetryPolicy
from app.queues.errors import (
    BatchCountInvalid,
    BatchDelayInvalid,
    BatchTooLarge,
    MessageInvalid,
    MessageTooLarge,
    QueueNotFound,
    QueueRequestInvalid,
)
from app.queues.local import LocalQueueEngine
from app.queues.topology import DEFAULT_RETENTION_SECONDS, QueueSettings
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator

pytestmark = pytest.mark.asyncio

Q = "conformance"
DLQ = "conformance-dlq"
MAX_BODY = 127_900  # 128,000 B minus ~100 B of Cloudflare's own metadata
VT = 10_000  # visibility timeout used by most tests, ms


class BackendHarness(Protocol):
    """What the suite needs beyond the protocol: provisioning and a clock it controls."""

    backend: QueueBackend

    async def declare(
        self,
        name: str,
        *,
        max_retries: int = 3,
        dead_letter_queue: str | None = None,
        retry_delay: int = 0,
        delivery_delay: int = 0,
        retention: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        """Create the queue (and its pull consumer) with these settings."""
        ...

    async def advance(self, seconds: float) -> None:
        """Move the backend's clock forward."""
        ...

    def now_ms(self) -> int:
        """The backend's current time."""
        ...


class LocalHarness:
    """The local engine on the test database (SQLite or PostgreSQL), on a manual clock."""

    def __init__(self, engine: LocalQueueEngine, clock: ManualClock) -> None:
        self.engine = engine
        self.backend: QueueBackend = engine
        self._clock = clock

    async def declare(
        self,
        name: str,
        *,
        max_retries: int = 3,
        dead_letter_queue: str | None = None,
        retry_delay: int = 0,
        delivery_delay: int = 0,
        retention: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        self.engine.declare(
            QueueSettings(
                name=name,
                delivery_delay=delivery_delay,
                message_retention_period=retention,
                max_retries=max_retries,
                dead_letter_queue=dead_letter_queue,
                retry_delay=retry_delay,
            )
        )

    async def advance(self, seconds: float) -> None:
        self._clock.advance(seconds=seconds)

    def now_ms(self) -> int:
        return self._clock.now_ms()


class CloudflareHarness:
    """jobgate's Cloudflare client against the emulator (a real process) over HTTP."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.client = CloudflareQueues(
            account_id=ACCOUNT,
            api_token=TOKEN,
            base_url=emulator.api_url,
            retry=RetryPolicy(max_retries=0),
        )
        self.backend: QueueBackend = self.client
        self._admin = httpx.AsyncClient(
            base_url=emulator.queues_url, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    async def declare(
        self,
        name: str,
        *,
        max_retries: int = 3,
        dead_letter_queue: str | None = None,
        retry_delay: int = 0,
        delivery_delay: int = 0,
        retention: int = DEFAULT_RETENTION_SECONDS,
    ) -> None:
        created = await self._admin.post(
            "",
            json={
                "queue_name": name,
                "settings": {
                    "delivery_delay": delivery_delay,
                    "message_retention_period": retention,
                },
            },
        )
        assert created.status_code == 200, created.text
        queue_id = created.json()["result"]["queue_id"]
        consumer = await self._admin.post(
            f"/{queue_id}/consumers",
            json={
                "type": "http_pull",
                "dead_letter_queue": dead_letter_queue or "",
                "settings": {"max_retries": max_retries, "retry_delay": retry_delay},
            },
        )
        assert consumer.status_code == 200, consumer.text
        await self.client.refresh_queue_ids()

    async def advance(self, seconds: float) -> None:
        self.emulator.advance(seconds)

    def now_ms(self) -> int:
        now: int = self.emulator.control("GET", "clock")["now_ms"]
        return now

    async def close(self) -> None:
        await self._admin.aclose()
        await self.client.close()


@pytest.fixture(scope="module")
def emulator(database: tuple[str, str | None]) -> Iterator[Emulator]:
    running = Emulator(start_emulator(emulator_env(database)))
    try:
        yield running
    finally:
        running.close()


@pytest_asyncio.fixture(params=["local", "cloudflare"])
async def harness(
    request: pytest.FixtureRequest, db_engine: AsyncEngine, clock: ManualClock
) -> AsyncIterator[BackendHarness]:
    if request.param == "local":
        engine = LocalQueueEngine(create_sessionmaker(db_engine), {}, clock=clock)
        yield LocalHarness(engine, clock)
        await engine.close()
    else:
        emulator: Emulator = request.getfixturevalue("emulator")
        emulator.reset()
        emulator.control("POST", "clock", {"frozen": True})  # exact timestamps, as locally
        cloudflare = CloudflareHarness(emulator)
        yield cloudflare
        await cloudflare.close()


@pytest_asyncio.fixture
async def backend(harness: BackendHarness) -> QueueBackend:
    """A backend with queue `Q` (3 retries, DLQ `DLQ`) and `DLQ` declared."""
    await harness.declare(DLQ)
    await harness.declare(Q, dead_letter_queue=DLQ)
    return harness.backend


def msg(body: object = None, *, delay_seconds: int | None = None) -> OutgoingMessage:
    """A json message (`{"n": 0}` unless a body is given)."""
    return OutgoingMessage(body={"n": 0} if body is None else body, delay_seconds=delay_seconds)


async def pull_one(backend: QueueBackend, queue: str = Q, vt: int = VT) -> LeasedMessage:
    result = await backend.pull(queue, batch_size=100, visibility_timeout_ms=vt)
    assert len(result.messages) == 1, result.messages
    return result.messages[0]


async def pull_all(backend: QueueBackend, queue: str = Q, vt: int = VT) -> list[LeasedMessage]:
    return (await backend.pull(queue, batch_size=100, visibility_timeout_ms=vt)).messages


async def bodies(backend: QueueBackend, queue: str = Q) -> list[object]:
    """Pull and ack everything visible; the bodies, sorted."""
    messages = await pull_all(backend, queue)
    if messages:
        result = await backend.ack(queue, acks=[m.lease_id for m in messages])
        assert result.ack_count == len(messages)
    return sorted((m.body for m in messages), key=repr)


async def fail(backend: QueueBackend, message: LeasedMessage, delay: int | None = None) -> None:
    result = await backend.ack(Q, retries=[RetryRequest(message.lease_id, delay_seconds=delay)])
    assert result == AckResult(ack_count=0, retry_count=1, warnings={})


class TestSendAndPull:
    async def test_json_roundtrip(self, backend: QueueBackend, harness: BackendHarness) -> None:
        body = {"job_id": "j1", "nested": {"list": [1, 2.5, None, True]}, "text": "héllo ✓"}
        await backend.send(Q, OutgoingMessage(body=body))
        message = await pull_one(backend)
        assert message.body == body
        assert message.content_type == "json"
        assert message.attempts == 1
        assert re.fullmatch(r"[0-9a-f]{32}", message.id)
        assert message.lease_id
        assert message.timestamp_ms == harness.now_ms()
        assert message.metadata["CF-Content-Type"] == "json"

    @pytest.mark.parametrize("body", ["a json string", 42, [1, "two"], False])
    async def test_json_scalars_and_lists(self, backend: QueueBackend, body: object) -> None:
        await backend.send(Q, OutgoingMessage(body=body))
        assert (await pull_one(backend)).body == body

    async def test_text_roundtrip(self, backend: QueueBackend) -> None:
        await backend.send(
            Q, OutgoingMessage(body='{"not": "parsed"} ünïcode', content_type="text")
        )
        message = await pull_one(backend)
        assert message.body == '{"not": "parsed"} ünïcode'
        assert message.content_type == "text"
        assert message.metadata["CF-Content-Type"] == "text"

    async def test_batch_mixes_content_types(self, backend: QueueBackend) -> None:
        await backend.send_batch(
            Q, [msg({"a": 1}), OutgoingMessage(body="plain", content_type="text"), msg([2])]
        )
        messages = await pull_all(backend)
        assert sorted((m.content_type, repr(m.body)) for m in messages) == [
            ("json", "[2]"),
            ("json", "{'a': 1}"),
            ("text", "'plain'"),
        ]
        assert len({m.id for m in messages}) == 3

    async def test_empty_queue_pulls_nothing(self, backend: QueueBackend) -> None:
        result = await backend.pull(Q)
        assert result.messages == []
        assert result.metrics.backlog_count == 0


class TestDelays:
    async def test_message_delay(self, backend: QueueBackend, harness: BackendHarness) -> None:
        await backend.send(Q, msg(delay_seconds=30))
        assert await pull_all(backend) == []
        await harness.advance(29.999)
        assert await pull_all(backend) == []
        await harness.advance(0.001)
        message = await pull_one(backend)
        assert message.attempts == 1

    async def test_batch_delay_and_per_message_override(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send_batch(
            Q,
            [msg("batch"), msg("now", delay_seconds=0), msg("later", delay_seconds=120)],
            delay_seconds=60,
        )
        assert await bodies(backend) == ["now"]
        await harness.advance(60)
        assert await bodies(backend) == ["batch"]
        await harness.advance(59)
        assert await bodies(backend) == []
        await harness.advance(1)
        assert await bodies(backend) == ["later"]

    async def test_queue_delivery_delay_and_zero_forces_immediate(
        self, harness: BackendHarness
    ) -> None:
        await harness.declare("slow", delivery_delay=30)
        backend = harness.backend
        await backend.send("slow", msg("default"))
        await backend.send("slow", msg("zero", delay_seconds=0))
        await backend.send_batch("slow", [msg("batch-zero")], delay_seconds=0)
        await backend.send_batch("slow", [msg("batch-default")])
        assert await bodies(backend, "slow") == ["batch-zero", "zero"]
        await harness.advance(30)
        assert await bodies(backend, "slow") == ["batch-default", "default"]

    async def test_longest_delay_is_accepted(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg(delay_seconds=86_400))
        await harness.advance(86_399)
        assert await pull_all(backend) == []
        await harness.advance(1)
        await pull_one(backend)


class TestPullBatch:
    async def test_default_batch_size_is_5(self, backend: QueueBackend) -> None:
        await backend.send_batch(Q, [msg(i) for i in range(7)])
        first = await backend.pull(Q)
        assert len(first.messages) == DEFAULT_PULL_BATCH == 5
        rest = await backend.pull(Q, batch_size=100)
        assert len(rest.messages) == 2
        assert {m.body for m in first.messages + rest.messages} == set(range(7))

    async def test_batch_size_caps_and_max_100(self, backend: QueueBackend) -> None:
        for start in (0, 100):
            await backend.send_batch(Q, [msg(start + i) for i in range(100)])
        assert len((await backend.pull(Q, batch_size=3)).messages) == 3
        assert len((await backend.pull(Q, batch_size=100)).messages) == 100
        assert len((await backend.pull(Q, batch_size=100)).messages) == 97

    @pytest.mark.parametrize(
        ("batch_size", "visibility_timeout_ms"),
        [(0, VT), (101, VT), (5, 0), (5, 43_200_001)],
    )
    async def test_out_of_range_pull_is_refused(
        self, backend: QueueBackend, batch_size: int, visibility_timeout_ms: int
    ) -> None:
        with pytest.raises(QueueRequestInvalid) as caught:
            await backend.pull(
                Q, batch_size=batch_size, visibility_timeout_ms=visibility_timeout_ms
            )
        assert caught.value.code == 10207

    async def test_concurrent_pulls_get_distinct_messages(self, backend: QueueBackend) -> None:
        await backend.send_batch(Q, [msg(i) for i in range(40)])
        results = await asyncio.gather(*(backend.pull(Q, batch_size=10) for _ in range(6)))
        ids = [m.id for r in results for m in r.messages]
        assert len(ids) == 40
        assert len(set(ids)) == 40


class TestLeases:
    async def test_leased_message_is_invisible_until_lease_expires(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        first = await pull_one(backend, vt=1_000)
        await harness.advance(0.999)
        assert await pull_all(backend) == []
        await harness.advance(0.001)
        second = await pull_one(backend)
        assert second.id == first.id
        assert second.attempts == 2
        assert second.lease_id != first.lease_id
        assert second.timestamp_ms == first.timestamp_ms

    async def test_attempts_count_every_delivery(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        seen = []
        for _ in range(3):
            seen.append((await pull_one(backend, vt=500)).attempts)
            await harness.advance(0.5)
        assert seen == [1, 2, 3]

    async def test_ack_deletes(self, backend: QueueBackend, harness: BackendHarness) -> None:
        await backend.send_batch(Q, [msg(1), msg(2)])
        one, two = await pull_all(backend)
        result = await backend.ack(Q, acks=[one.lease_id])
        assert result == AckResult(ack_count=1, retry_count=0, warnings={})
        await harness.advance(VT / 1000)
        again = await pull_one(backend)
        assert again.id == two.id
        assert (await backend.metrics(Q)).backlog_count == 1

    async def test_stale_lease_ack_is_permissive(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        old = await pull_one(backend, vt=1_000)
        await harness.advance(1)
        new = await pull_one(backend)
        # Both consumers may ack without an error; only the first ack deletes.
        assert (await backend.ack(Q, acks=[old.lease_id])).ack_count == 1
        late = await backend.ack(Q, acks=[new.lease_id])
        assert late.ack_count == 0
        assert set(late.warnings) == {new.lease_id}
        await harness.advance(VT / 1000)
        assert await pull_all(backend) == []

    async def test_ack_after_lease_expiry_without_redelivery_deletes(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        message = await pull_one(backend, vt=1_000)
        await harness.advance(5)
        assert (await backend.ack(Q, acks=[message.lease_id])).ack_count == 1
        assert await pull_all(backend) == []

    async def test_unknown_leases_warn_without_failing(self, backend: QueueBackend) -> None:
        await backend.send(Q, msg())
        message = await pull_one(backend)
        result = await backend.ack(
            Q,
            acks=["not-a-lease", message.lease_id],
            retries=[RetryRequest("also-not-a-lease", delay_seconds=5)],
        )
        assert result.ack_count == 1
        assert result.retry_count == 0
        assert set(result.warnings) == {"not-a-lease", "also-not-a-lease"}

    async def test_counts_only_effective_operations(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send_batch(Q, [msg(i) for i in range(4)])
        a, b, c, d = await pull_all(backend)
        assert (await backend.ack(Q, acks=[a.lease_id])).ack_count == 1
        result = await backend.ack(
            Q,
            acks=[a.lease_id, b.lease_id],  # a: already acked
            retries=[RetryRequest(c.lease_id), RetryRequest(d.lease_id)],
        )
        assert (result.ack_count, result.retry_count) == (1, 2)
        assert set(result.warnings) == {a.lease_id}
        again = await backend.ack(Q, retries=[RetryRequest(c.lease_id)])  # lease given back
        assert (again.ack_count, again.retry_count) == (0, 0)
        assert set(again.warnings) == {c.lease_id}
        assert {m.id for m in await pull_all(backend)} == {c.id, d.id}

    async def test_empty_ack_is_a_no_op(self, backend: QueueBackend) -> None:
        assert await backend.ack(Q) == AckResult(ack_count=0, retry_count=0, warnings={})


class TestRetry:
    async def test_retry_without_delay_is_immediate(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        await fail(backend, await pull_one(backend))
        again = await pull_one(backend)
        assert again.attempts == 2

    async def test_retry_with_delay(self, backend: QueueBackend, harness: BackendHarness) -> None:
        await backend.send(Q, msg())
        await fail(backend, await pull_one(backend), delay=60)
        await harness.advance(59)
        assert await pull_all(backend) == []
        await harness.advance(1)
        assert (await pull_one(backend)).attempts == 2

    async def test_consumer_retry_delay_applies_unless_overridden(
        self, harness: BackendHarness
    ) -> None:
        await harness.declare("patient", retry_delay=30)
        backend = harness.backend
        await backend.send_batch("patient", [msg("default"), msg("override")])
        leases = {m.body: m.lease_id for m in await pull_all(backend, "patient")}
        result = await backend.ack(
            "patient",
            retries=[
                RetryRequest(leases["default"]),
                RetryRequest(leases["override"], delay_seconds=0),
            ],
        )
        assert result.retry_count == 2
        assert await bodies(backend, "patient") == ["override"]
        await harness.advance(29)
        assert await bodies(backend, "patient") == []
        await harness.advance(1)
        assert await bodies(backend, "patient") == ["default"]

    async def test_retry_of_a_redelivered_message_with_an_old_lease_is_refused(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg())
        old = await pull_one(backend, vt=1_000)
        await harness.advance(1)
        new = await pull_one(backend)
        result = await backend.ack(Q, retries=[RetryRequest(old.lease_id)])
        assert result.retry_count == 0
        assert set(result.warnings) == {old.lease_id}
        await fail(backend, new)  # the current lease still works

    async def test_retried_message_keeps_its_id_and_timestamp(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg({"k": "v"}))
        first = await pull_one(backend)
        await harness.advance(3)
        await fail(backend, first)
        second = await pull_one(backend)
        assert (second.id, second.timestamp_ms, second.body) == (
            first.id,
            first.timestamp_ms,
            {"k": "v"},
        )


class TestDeadLetter:
    async def test_after_max_retries_plus_one_expired_leases(self, harness: BackendHarness) -> None:
        await harness.declare("dead")
        await harness.declare("fragile", max_retries=2, dead_letter_queue="dead")
        backend = harness.backend
        await backend.send("fragile", msg({"job": 7}))
        for attempt in (1, 2, 3):
            message = await pull_one(backend, "fragile", vt=1_000)
            assert message.attempts == attempt
            await harness.advance(1)
        assert await pull_all(backend, "fragile") == []
        assert (await backend.metrics("fragile")).backlog_count == 0
        dead = await pull_one(backend, "dead")
        assert dead.body == {"job": 7}
        assert dead.attempts == 1

    async def test_expired_final_lease_reaches_dlq_without_pulling_the_source(
        self, harness: BackendHarness
    ) -> None:
        await harness.declare("dead")
        await harness.declare("fragile", max_retries=0, dead_letter_queue="dead")
        backend = harness.backend
        await backend.send("fragile", msg("x"))
        await pull_one(backend, "fragile", vt=1_000)
        await harness.advance(0.999)
        assert (await backend.metrics("dead")).backlog_count == 0
        await harness.advance(0.001)
        assert (await backend.metrics("dead")).backlog_count == 1
        assert (await pull_one(backend, "dead")).body == "x"

    async def test_after_max_retries_plus_one_explicit_retries(
        self, harness: BackendHarness
    ) -> None:
        await harness.declare("dead")
        await harness.declare("fragile", max_retries=2, dead_letter_queue="dead")
        backend = harness.backend
        await backend.send("fragile", msg("poison"))
        for attempt in (1, 2):
            message = await pull_one(backend, "fragile")
            assert message.attempts == attempt
            await backend.ack("fragile", retries=[RetryRequest(message.lease_id)])
            assert (await backend.metrics("dead")).backlog_count == 0
        last = await pull_one(backend, "fragile")
        assert last.attempts == 3
        result = await backend.ack("fragile", retries=[RetryRequest(last.lease_id, 600)])
        assert result.retry_count == 1
        assert (await backend.metrics("fragile")).backlog_count == 0
        # Dead-lettered at once, whatever delay the retry asked for.
        assert (await pull_one(backend, "dead")).body == "poison"

    async def test_default_max_retries_allows_four_deliveries(self, backend: QueueBackend) -> None:
        await backend.send(Q, msg())
        for attempt in (1, 2, 3, 4):
            message = await pull_one(backend)
            assert message.attempts == attempt
            await fail(backend, message)
        assert await pull_all(backend) == []
        assert len(await pull_all(backend, DLQ)) == 1

    async def test_zero_retries_means_one_delivery(self, harness: BackendHarness) -> None:
        await harness.declare("dead")
        await harness.declare("once", max_retries=0, dead_letter_queue="dead")
        backend = harness.backend
        await backend.send("once", msg())
        await backend.ack(
            "once", retries=[RetryRequest((await pull_one(backend, "once")).lease_id)]
        )
        assert await pull_all(backend, "once") == []
        assert len(await pull_all(backend, "dead")) == 1

    async def test_without_dlq_the_message_is_dropped(self, harness: BackendHarness) -> None:
        await harness.declare("nodlq", max_retries=1)
        backend = harness.backend
        await backend.send_batch("nodlq", [msg("expires"), msg("retried")])
        for _ in range(2):
            leases = {m.body: m.lease_id for m in await pull_all(backend, "nodlq", vt=1_000)}
            await backend.ack("nodlq", retries=[RetryRequest(leases["retried"])])
            await harness.advance(1)
        assert await pull_all(backend, "nodlq") == []
        assert (await backend.metrics("nodlq")).backlog_count == 0

    async def test_successful_last_attempt_is_not_dead_lettered(
        self, harness: BackendHarness
    ) -> None:
        await harness.declare("dead")
        await harness.declare("fragile", max_retries=1, dead_letter_queue="dead")
        backend = harness.backend
        await backend.send("fragile", msg())
        await backend.ack(
            "fragile", retries=[RetryRequest((await pull_one(backend, "fragile")).lease_id)]
        )
        last = await pull_one(backend, "fragile")
        assert (await backend.ack("fragile", acks=[last.lease_id])).ack_count == 1
        await harness.advance(VT / 1000)
        assert (await backend.metrics("fragile")).backlog_count == 0
        assert (await backend.metrics("dead")).backlog_count == 0


class TestRetention:
    async def test_old_messages_expire(self, harness: BackendHarness) -> None:
        await harness.declare("short", retention=60)
        backend = harness.backend
        await backend.send_batch("short", [msg("leased"), msg("waiting")])
        await backend.send("short", msg("delayed", delay_seconds=120))
        leased = (
            await backend.pull("short", batch_size=1, visibility_timeout_ms=3_600_000)
        ).messages
        assert len(leased) == 1
        await harness.advance(30)
        await backend.send("short", msg("young"))
        await harness.advance(30)
        assert (await backend.metrics("short")).backlog_count == 4
        await harness.advance(0.001)
        metrics = await backend.metrics("short")
        assert metrics.backlog_count == 1
        assert metrics.oldest_message_timestamp_ms == harness.now_ms() - 30_001
        assert await bodies(backend, "short") == ["young"]


class TestMetrics:
    async def test_empty_queue(self, backend: QueueBackend) -> None:
        metrics = await backend.metrics(Q)
        assert (
            metrics.backlog_count,
            metrics.backlog_bytes,
            metrics.oldest_message_timestamp_ms,
        ) == (0, 0, 0)

    async def test_counts_bytes_and_oldest(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        first_ms = harness.now_ms()
        sent = await backend.send(Q, OutgoingMessage(body="abc", content_type="text"))
        assert (sent.backlog_count, sent.backlog_bytes) == (1, 3)
        assert sent.oldest_message_timestamp_ms == first_ms
        await harness.advance(5)
        # Bytes are UTF-8 bytes of the body: "é" is two.
        sent = await backend.send_batch(Q, [OutgoingMessage(body="é" * 10, content_type="text")])
        assert (sent.backlog_count, sent.backlog_bytes) == (2, 23)
        assert sent.oldest_message_timestamp_ms == first_ms
        assert await backend.metrics(Q) == sent

    async def test_includes_delayed_and_in_flight(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, msg(delay_seconds=3_600))
        await backend.send_batch(Q, [msg(1), msg(2)])
        pulled = await backend.pull(Q, batch_size=100)
        assert len(pulled.messages) == 2
        assert pulled.metrics.backlog_count == 3
        assert (await backend.metrics(Q)).backlog_count == 3

    async def test_ack_and_dead_letter_update_metrics(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        await backend.send(Q, OutgoingMessage(body="old", content_type="text"))
        await harness.advance(10)
        second_ms = harness.now_ms()
        await backend.send(Q, OutgoingMessage(body="newer", content_type="text"))
        messages = {m.body: m for m in await pull_all(backend)}
        await backend.ack(Q, acks=[messages["old"].lease_id])
        metrics = await backend.metrics(Q)
        assert (metrics.backlog_count, metrics.backlog_bytes) == (1, 5)
        assert metrics.oldest_message_timestamp_ms == second_ms
        await backend.ack(Q, acks=[messages["newer"].lease_id])
        assert (await backend.metrics(Q)).oldest_message_timestamp_ms == 0
        assert (await backend.metrics(DLQ)).backlog_count == 0


class TestLimits:
    async def test_largest_message_is_accepted(self, backend: QueueBackend) -> None:
        await backend.send(Q, OutgoingMessage(body="x" * MAX_BODY, content_type="text"))
        assert len((await pull_one(backend)).body) == MAX_BODY

    @pytest.mark.parametrize(
        "message",
        [
            OutgoingMessage(body="x" * (MAX_BODY + 1), content_type="text"),
            OutgoingMessage(body="é" * (MAX_BODY // 2 + 1), content_type="text"),
            OutgoingMessage(body={"blob": "x" * MAX_BODY}),
        ],
        ids=["text", "multibyte", "json"],
    )
    async def test_oversized_message(self, backend: QueueBackend, message: OutgoingMessage) -> None:
        with pytest.raises(MessageTooLarge) as caught:
            await backend.send(Q, message)
        assert caught.value.code == 10204
        with pytest.raises(MessageTooLarge):
            await backend.send_batch(Q, [msg(), message])
        assert (await backend.metrics(Q)).backlog_count == 0

    @pytest.mark.parametrize("count", [0, 101])
    async def test_batch_count(self, backend: QueueBackend, count: int) -> None:
        with pytest.raises(BatchCountInvalid) as caught:
            await backend.send_batch(Q, [msg(i) for i in range(count)])
        assert caught.value.code == 10206
        await backend.send_batch(Q, [msg(i) for i in range(100)])
        assert (await backend.metrics(Q)).backlog_count == 100

    async def test_batch_bytes(self, backend: QueueBackend) -> None:
        part = OutgoingMessage(body="x" * 85_334, content_type="text")  # 3 x = 256,002 B
        with pytest.raises(BatchTooLarge) as caught:
            await backend.send_batch(Q, [part, part, part])
        assert caught.value.code == 10205
        assert (await backend.metrics(Q)).backlog_count == 0
        fits = OutgoingMessage(body="x" * 85_333, content_type="text")  # 255,999 B
        await backend.send_batch(Q, [fits, fits, fits])
        assert (await backend.metrics(Q)).backlog_count == 3

    @pytest.mark.parametrize("delay", [86_401, -1])
    async def test_message_delay_range(self, backend: QueueBackend, delay: int) -> None:
        with pytest.raises(MessageInvalid) as caught:
            await backend.send(Q, msg(delay_seconds=delay))
        assert caught.value.code == 10203
        with pytest.raises(MessageInvalid):
            await backend.send_batch(Q, [msg(), msg(delay_seconds=delay)])
        assert (await backend.metrics(Q)).backlog_count == 0

    @pytest.mark.parametrize("delay", [86_401, -1])
    async def test_batch_delay_range(self, backend: QueueBackend, delay: int) -> None:
        with pytest.raises(BatchDelayInvalid) as caught:
            await backend.send_batch(Q, [msg()], delay_seconds=delay)
        assert caught.value.code == 10202

    @pytest.mark.parametrize("delay", [86_401, -1])
    async def test_retry_delay_range(self, backend: QueueBackend, delay: int) -> None:
        await backend.send(Q, msg())
        message = await pull_one(backend)
        with pytest.raises(MessageInvalid) as caught:
            await backend.ack(Q, retries=[RetryRequest(message.lease_id, delay_seconds=delay)])
        assert caught.value.code == 10203
        # Nothing was applied: the lease is still good.
        await fail(backend, message)

    async def test_text_body_must_be_a_string(self, backend: QueueBackend) -> None:
        with pytest.raises(QueueRequestInvalid) as caught:
            await backend.send(Q, OutgoingMessage(body={"a": 1}, content_type="text"))
        assert caught.value.code == 10207

    async def test_unknown_content_type(self, backend: QueueBackend) -> None:
        with pytest.raises(MessageInvalid) as caught:
            await backend.send(Q, OutgoingMessage(body="x", content_type="v8"))  # type: ignore[arg-type]
        assert caught.value.code == 10203


class TestUnknownQueue:
    async def test_every_operation_raises_queue_not_found(self, backend: QueueBackend) -> None:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: backend.send("missing", msg()),
            lambda: backend.send_batch("missing", [msg()]),
            lambda: backend.pull("missing"),
            lambda: backend.ack("missing", acks=["x"]),
            lambda: backend.metrics("missing"),
        ]
        for call in calls:
            with pytest.raises(QueueNotFound) as caught:
                await call()
            assert caught.value.code == 10104


def controls(backend: QueueBackend) -> SupportsQueueControl:
    assert isinstance(backend, SupportsQueueControl)
    return backend


class TestQueueControls:
    """The operator's capability: pause, resume, purge, stats (same semantics on both)."""

    async def test_a_paused_queue_accepts_and_delivers_nothing_until_resumed(
        self, backend: QueueBackend
    ) -> None:
        queue = controls(backend)
        await queue.pause(Q)
        await queue.pause(Q)  # idempotent
        await backend.send_batch(Q, [msg({"n": n}) for n in range(3)])
        pulled = await backend.pull(Q, batch_size=10, visibility_timeout_ms=VT)
        assert pulled.messages == []  # no error either: Cloudflare's 10252 is an empty pull
        stats = await queue.stats(Q)
        assert (stats.backlog, stats.paused) == (3, True)
        assert not (await queue.stats(DLQ)).paused  # only that queue
        await queue.resume(Q)
        assert not (await queue.stats(Q)).paused
        assert len(await pull_all(backend)) == 3

    async def test_stats_count_backlog_in_flight_and_oldest(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        queue = controls(backend)
        empty = await queue.stats(Q)
        assert (empty.backlog, empty.oldest_message_timestamp_ms, empty.paused) == (0, 0, False)
        assert empty.in_flight in (0, None)  # Cloudflare does not report in-flight messages
        sent_at = harness.now_ms()
        await backend.send_batch(Q, [msg(), msg(delay_seconds=60), msg(delay_seconds=60)])
        await pull_one(backend, vt=5_000)
        stats = await queue.stats(Q)
        assert stats.backlog == 3
        assert stats.in_flight in (1, None)
        assert abs(stats.oldest_message_timestamp_ms - sent_at) < 5_000

    async def test_purge_deletes_delayed_and_leased_messages(
        self, backend: QueueBackend, harness: BackendHarness
    ) -> None:
        queue = controls(backend)
        await backend.send_batch(Q, [msg(), msg(delay_seconds=600), msg(delay_seconds=600)])
        await pull_one(backend)
        assert await queue.purge(Q) in (3, None)
        assert (await queue.stats(Q)).backlog == 0
        await harness.advance(601)
        assert await pull_all(backend) == []
        await backend.send(Q, msg())  # the queue still works
        assert len(await pull_all(backend)) == 1

    async def test_a_paused_queue_still_applies_retention(self, harness: BackendHarness) -> None:
        await harness.declare("short", retention=60)
        queue = controls(harness.backend)
        await queue.pause("short")
        await harness.backend.send("short", msg())
        await harness.advance(61)
        assert (await queue.stats("short")).backlog == 0
