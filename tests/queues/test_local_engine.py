"""The local queue engine beyond the shared contract: concurrency on SQLite and PostgreSQL,
staging inside a caller's transaction, lease ids, DLQ creation, bulk statements."""

from __future__ import annotations

import asyncio
import base64
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.core.db import create_engine, create_sessionmaker, is_sqlite
from app.queues.base import LeasedMessage, OutgoingMessage, RetryRequest
from app.queues.errors import MessageInvalid, QueueNotFound
from app.queues.local import LocalQueueEngine, make_lease_id, message_id_of
from app.queues.models import QueueMessage
from app.queues.topology import DEFAULT_RETENTION_SECONDS, QueueSettings
from app.settings import Settings
from tests.support.statements import count_statements

pytestmark = pytest.mark.asyncio

HOUR_MS = 3_600_000


def queue(name: str, *, max_retries: int = 3, dlq: str | None = None) -> QueueSettings:
    return QueueSettings(
        name=name,
        delivery_delay=0,
        message_retention_period=DEFAULT_RETENTION_SECONDS,
        max_retries=max_retries,
        dead_letter_queue=dlq,
        retry_delay=0,
    )


@pytest_asyncio.fixture
async def engine(db_engine: AsyncEngine, clock: ManualClock) -> LocalQueueEngine:
    return LocalQueueEngine(
        create_sessionmaker(db_engine), {"jobs": queue("jobs", dlq="jobs-dlq")}, clock=clock
    )


@pytest_asyncio.fixture
async def second_db_engine(
    settings: Settings, database: tuple[str, str | None]
) -> AsyncIterator[AsyncEngine]:
    """Another connection pool on the same database: what a second process would have."""
    other = create_engine(settings.db, search_path=database[1])
    yield other
    await other.dispose()


async def send_numbered(engine: LocalQueueEngine, count: int, name: str = "jobs") -> None:
    for start in range(0, count, 100):
        batch = [OutgoingMessage(body={"n": n}) for n in range(start, min(count, start + 100))]
        await engine.send_batch(name, batch)


class TestConcurrentPullers:
    @pytest.mark.parametrize("pools", [1, 2], ids=["one-pool", "two-pools"])
    async def test_every_message_leased_exactly_once(
        self,
        engine: LocalQueueEngine,
        second_db_engine: AsyncEngine,
        clock: ManualClock,
        pools: int,
    ) -> None:
        total, pullers = 300, 12
        await send_numbered(engine, total)
        engines = [engine]
        if pools == 2:
            engines.append(
                LocalQueueEngine(
                    create_sessionmaker(second_db_engine),
                    {"jobs": engine.settings("jobs")},
                    clock=clock,
                )
            )

        async def puller(index: int) -> list[LeasedMessage]:
            mine: list[LeasedMessage] = []
            source = engines[index % len(engines)]
            while True:
                result = await source.pull("jobs", batch_size=7, visibility_timeout_ms=HOUR_MS)
                if not result.messages:
                    return mine
                mine.extend(result.messages)

        results = await asyncio.wait_for(
            asyncio.gather(*(puller(i) for i in range(pullers))), timeout=120
        )
        leased = [m for batch in results for m in batch]
        ids = [m.id for m in leased]
        assert len(ids) == len(set(ids)) == total
        assert sorted(m.body["n"] for m in leased) == list(range(total))
        assert {m.attempts for m in leased} == {1}
        assert sum(1 for batch in results if batch) > 1, "pullers did not overlap at all"

    async def test_pull_and_ack_concurrently_drains_once(self, engine: LocalQueueEngine) -> None:
        total = 200
        await send_numbered(engine, total)

        async def worker() -> tuple[int, int]:
            pulled = acked = 0
            while True:
                result = await engine.pull("jobs", batch_size=5, visibility_timeout_ms=HOUR_MS)
                if not result.messages:
                    return pulled, acked
                pulled += len(result.messages)
                done = await engine.ack("jobs", acks=[m.lease_id for m in result.messages])
                assert done.warnings == {}
                acked += done.ack_count

        counts = await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), 120)
        assert sum(p for p, _ in counts) == sum(a for _, a in counts) == total
        assert (await engine.metrics("jobs")).backlog_count == 0

    async def test_concurrent_sweeps_dead_letter_each_message_once(
        self, engine: LocalQueueEngine, clock: ManualClock
    ) -> None:
        engine.declare(queue("fragile", max_retries=0, dlq="graveyard"))
        engine.declare(queue("graveyard"))
        await send_numbered(engine, 60, "fragile")
        for _ in range(2):
            await engine.pull("fragile", batch_size=30, visibility_timeout_ms=1_000)
        clock.advance(seconds=1)
        # Every call sweeps: pulls and metrics on the source and on the DLQ, all at once.
        calls: list[Awaitable[object]] = []
        for _ in range(3):
            calls += [engine.metrics("fragile"), engine.metrics("graveyard")]
            calls += [engine.pull("fragile", batch_size=10), engine.pull("graveyard")]
        await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
        assert (await engine.metrics("fragile")).backlog_count == 0
        dead = await engine.metrics("graveyard")
        assert dead.backlog_count == 60


class TestConcurrentAcks:
    async def test_acks_retries_and_extensions_of_shared_leases_never_deadlock(
        self, engine: LocalQueueEngine, second_db_engine: AsyncEngine, clock: ManualClock
    ) -> None:
        """Every statement locking several queue rows locks them in id order (on PostgreSQL
        two of them in different orders deadlock): acks, retries and heartbeats of the same
        leases, in shuffled orders, from two connection pools at once."""
        total = 240
        await send_numbered(engine, total)
        leased = (await engine.pull("jobs", batch_size=100, visibility_timeout_ms=HOUR_MS)).messages
        leased += (
            await engine.pull("jobs", batch_size=100, visibility_timeout_ms=HOUR_MS)
        ).messages
        leased += (await engine.pull("jobs", batch_size=40, visibility_timeout_ms=HOUR_MS)).messages
        leases = [m.lease_id for m in leased]
        assert len(set(leases)) == total
        other = LocalQueueEngine(
            create_sessionmaker(second_db_engine), {"jobs": engine.settings("jobs")}, clock=clock
        )
        rng = random.Random(9)

        def shuffled(items: list[str]) -> list[str]:
            copy = list(items)
            rng.shuffle(copy)
            return copy

        async def heartbeat(source: LocalQueueEngine) -> None:
            for _ in range(4):
                await source.extend_leases("jobs", shuffled(leases), HOUR_MS)

        async def settle(source: LocalQueueEngine, part: list[str]) -> None:
            # Half acked, half retried: overlapping with the other settlers' parts.
            half = len(part) // 2
            await source.ack(
                "jobs", acks=part[:half], retries=[RetryRequest(x, 0) for x in part[half:]]
            )

        calls: list[Awaitable[object]] = []
        settled: set[str] = set()
        for index, source in enumerate([engine, other] * 3):
            part = shuffled(leases)[: total // 2 + index * 10]
            settled.update(part)
            calls += [heartbeat(source), settle(source, part)]
        await asyncio.wait_for(asyncio.gather(*calls), timeout=120)
        # Every settled message was acked (gone) or retried (unleased); the rest still leased.
        async with create_sessionmaker(second_db_engine)() as session:
            rows = (await session.execute(select(QueueMessage))).scalars().all()  # type: ignore[arg-type]
        assert {row.lease_id for row in rows if row.lease_id} == set(leases) - settled
        assert len(rows) < total


def _sqlite_path(engine: AsyncEngine) -> str:
    path = make_url(str(engine.url)).database
    assert path
    return path


async def committed_count(db_engine: AsyncEngine, queue_name: str) -> int:
    """Rows another connection can see, without waiting for the writer's lock."""
    if is_sqlite(db_engine):
        # Our SQLite sessions BEGIN IMMEDIATE and would queue behind the open writer;
        # a plain WAL reader does not.
        with sqlite3.connect(_sqlite_path(db_engine)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM queue_message WHERE queue = ?", (queue_name,)
            ).fetchone()
        return int(row[0])
    async with db_engine.connect() as conn:
        stmt = select(func.count()).where(QueueMessage.queue == queue_name)  # type: ignore[arg-type]
        return int((await conn.execute(stmt)).scalar_one())


class TestStage:
    async def test_invisible_until_commit(
        self, engine: LocalQueueEngine, db_engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(db_engine)
        async with maker() as session:
            await engine.stage(session, "jobs", [OutgoingMessage(body={"n": 1})])
            await session.flush()
            assert await committed_count(db_engine, "jobs") == 0
            await session.commit()
        assert await committed_count(db_engine, "jobs") == 1
        [message] = (await engine.pull("jobs")).messages
        assert message.body == {"n": 1}

    async def test_rolled_back_with_the_caller(
        self, engine: LocalQueueEngine, db_engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(db_engine)
        async with maker() as session:
            await engine.stage(session, "jobs", [OutgoingMessage(body=n) for n in range(3)])
            await session.rollback()
        assert (await engine.metrics("jobs")).backlog_count == 0
        assert (await engine.pull("jobs")).messages == []

    async def test_invalid_batch_writes_nothing(
        self, engine: LocalQueueEngine, db_engine: AsyncEngine
    ) -> None:
        maker = create_sessionmaker(db_engine)
        async with maker() as session:
            with pytest.raises(MessageInvalid):
                await engine.stage(
                    session,
                    "jobs",
                    [OutgoingMessage(body=1), OutgoingMessage(body=2, delay_seconds=-5)],
                )
            await session.commit()
        assert (await engine.metrics("jobs")).backlog_count == 0

    async def test_unknown_queue(self, engine: LocalQueueEngine, db_engine: AsyncEngine) -> None:
        async with create_sessionmaker(db_engine)() as session:
            with pytest.raises(QueueNotFound):
                await engine.stage(session, "nope", [OutgoingMessage(body=1)])


class TestLeaseIds:
    async def test_opaque_and_naming_their_message(
        self, engine: LocalQueueEngine, clock: ManualClock
    ) -> None:
        await engine.send("jobs", OutgoingMessage(body=1))
        first = (await engine.pull("jobs", visibility_timeout_ms=1_000)).messages[0]
        clock.advance(seconds=1)
        second = (await engine.pull("jobs")).messages[0]
        assert first.lease_id != second.lease_id
        for message in (first, second):
            assert message.id not in message.lease_id
            assert message_id_of(message.lease_id) == message.id
            assert len(message.lease_id) <= 128  # the column's width

    @pytest.mark.parametrize(
        "lease_id",
        ["", "garbage!", "bm9wZQ", base64.urlsafe_b64encode(b"short.abc").decode(), "\u00e9"],
    )
    async def test_foreign_leases_name_nothing(self, lease_id: str) -> None:
        assert message_id_of(lease_id) is None

    async def test_roundtrip(self) -> None:
        assert message_id_of(make_lease_id("a" * 32)) == "a" * 32


class TestDeadLetterQueues:
    async def test_missing_dlq_is_declared_on_first_use(
        self, db_engine: AsyncEngine, clock: ManualClock
    ) -> None:
        engine = LocalQueueEngine(
            create_sessionmaker(db_engine), {"src": queue("src", max_retries=0, dlq="src-dlq")}
        )
        engine.clock = clock
        assert "src-dlq" not in engine.queue_names
        with pytest.raises(QueueNotFound):
            await engine.metrics("src-dlq")
        await engine.send("src", OutgoingMessage(body="poison"))
        clock.advance(seconds=10)
        [message] = (await engine.pull("src")).messages
        result = await engine.ack("src", retries=[RetryRequest(message.lease_id)])
        assert result.retry_count == 1
        assert "src-dlq" in engine.queue_names
        settings = engine.settings("src-dlq")
        assert settings.dead_letter_queue is None
        assert settings.message_retention_period == DEFAULT_RETENTION_SECONDS
        [dead] = (await engine.pull("src-dlq")).messages
        assert (dead.id, dead.body, dead.attempts) == (message.id, "poison", 1)
        # A new message in the DLQ: its retention counts from the dead-lettering.
        assert dead.timestamp_ms == clock.now_ms()

    async def test_lowering_max_retries_stops_redelivery(
        self, engine: LocalQueueEngine, clock: ManualClock
    ) -> None:
        await engine.send("jobs", OutgoingMessage(body=1))
        for _ in range(2):
            [message] = (await engine.pull("jobs")).messages
            await engine.ack("jobs", retries=[RetryRequest(message.lease_id)])
        engine.declare(queue("jobs", max_retries=1, dlq="jobs-dlq"))
        assert (await engine.pull("jobs")).messages == []
        assert (await engine.metrics("jobs-dlq")).backlog_count == 1

    async def test_runtime_declares_topology_dlqs(self, runtime: Runtime) -> None:
        names = set(runtime.queue_engine.queue_names)
        assert {"prestashop-sync-dlq", "image-processing-dlq", "ai-agent-tasks-dlq"} <= names
        assert (await runtime.queue_engine.metrics("image-processing-dlq")).backlog_count == 0


class TestBodies:
    @pytest.mark.parametrize("body", [float("nan"), {"x": float("inf")}, {1, 2}, b"bytes"])
    async def test_non_json_bodies_are_refused(self, engine: LocalQueueEngine, body: Any) -> None:
        with pytest.raises(MessageInvalid):
            await engine.send("jobs", OutgoingMessage(body=body))
        assert (await engine.metrics("jobs")).backlog_count == 0

    async def test_delay_metadata(self, engine: LocalQueueEngine, clock: ManualClock) -> None:
        await engine.send("jobs", OutgoingMessage(body=1, delay_seconds=20))
        clock.advance(seconds=20)
        [message] = (await engine.pull("jobs")).messages
        assert message.metadata == {
            "CF-sourceMessageSource": "api",
            "CF-Content-Type": "json",
            "CF-msg-delay-secs": "20",
        }


class TestPurge:
    async def test_deletes_delayed_and_leased(self, engine: LocalQueueEngine) -> None:
        await engine.send_batch("jobs", [OutgoingMessage(body=n) for n in range(3)])
        await engine.send("jobs", OutgoingMessage(body="later", delay_seconds=600))
        await engine.pull("jobs", batch_size=1)
        assert await engine.purge("jobs") == 4
        assert (await engine.metrics("jobs")).backlog_count == 0


class TestBulkStatements:
    """The statement count of a call does not grow with its batch."""

    async def _pull_and_settle(
        self, engine: LocalQueueEngine, db_engine: AsyncEngine, size: int
    ) -> tuple[int, int]:
        await send_numbered(engine, size)
        with count_statements(db_engine) as pulled:
            result = await engine.pull("jobs", batch_size=size)
        assert len(result.messages) == size
        half = size // 2
        with count_statements(db_engine) as settled:
            await engine.ack(
                "jobs",
                acks=[m.lease_id for m in result.messages[:half]],
                retries=[RetryRequest(m.lease_id) for m in result.messages[half:]],
            )
        await engine.purge("jobs")
        return len(pulled), len(settled)

    async def test_pull_and_ack_are_constant(
        self, engine: LocalQueueEngine, db_engine: AsyncEngine
    ) -> None:
        small = await self._pull_and_settle(engine, db_engine, 2)
        large = await self._pull_and_settle(engine, db_engine, 100)
        assert small == large
        with count_statements(db_engine) as sent:
            await send_numbered(engine, 100)
        assert len(sent) <= 8
