"""The scheduler runner: fires on time (manual clock, no sleeps), once, through the job path."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from prometheus_client import REGISTRY
from sqlalchemy import Connection, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bootstrap import Runtime, build_runtime
from app.core.clock import ManualClock, to_datetime
from app.core.db import metadata
from app.jobs.models import Job
from app.main import create_app
from app.outbox.models import OutboxMessage
from app.scheduler import service as scheduler_service
from app.scheduler.models import Schedule, ScheduleFire
from app.scheduler.runner import SchedulerRunner
from tests.factories import TenantFactory, auth
from tests.scheduler.conftest import at, make_schedule, ms
from tests.support.waiting import wait_until

pytestmark = pytest.mark.asyncio

_schedules = Schedule.__table__  # type: ignore[attr-defined]


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _fires(runtime: Runtime) -> list[ScheduleFire]:
    async with runtime.sessionmaker() as session:
        stmt = select(ScheduleFire).order_by(ScheduleFire.id)  # type: ignore[arg-type]
        return list((await session.execute(stmt)).scalars().all())


async def _schedule(runtime: Runtime, schedule_id: str) -> Schedule:
    async with runtime.sessionmaker() as session:
        row = await session.get(Schedule, schedule_id)
        assert row is not None
        return row


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.mark.usefixtures("scheduler_by_hand")
class TestFiresOnTime:
    async def test_fires_at_the_occurrence_not_before(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        created = await make_schedule(client, key)
        runner = SchedulerRunner(runtime.sessionmaker, runtime.submitter)
        clock.set(ms(at("2026-03-01T02:59:59.999")))
        assert await runner.run_once() == 0
        assert await _count(runtime, Job) == 0
        clock.set(ms(at("2026-03-01T03:00:00")))
        assert await runner.run_once() == 1
        assert await runner.run_once() == 0  # the occurrence fires once
        clock.set(ms(at("2026-03-01T05:59:00")))
        assert await runner.run_once() == 0
        clock.set(ms(at("2026-03-01T06:00:04")))  # a poll that comes a few seconds late
        assert await runner.run_once() == 1

        jobs = (await client.get("/v1/jobs?status=queued", headers=auth(key))).json()["data"]
        assert [job["idempotency_key"] for job in jobs] == [
            f"schedule:{created['id']}:2026-03-01T06:00:00.000Z",
            f"schedule:{created['id']}:2026-03-01T03:00:00.000Z",
        ]
        for job in jobs:
            assert job["type"] == "sync-orders"
            assert job["queue"] == "prestashop-sync"
            assert job["payload"] == {"siteId": "shop-1", "lastDays": 40, "bulkMode": True}
        # The jobs are on the queue like any submitted job.
        pulled = await runtime.queue_engine.pull("prestashop-sync", batch_size=10)
        assert sorted(m.body["job_id"] for m in pulled.messages) == sorted(j["id"] for j in jobs)

        schedule = (await client.get(f"/v1/schedules/{created['id']}", headers=auth(key))).json()
        assert datetime.fromisoformat(schedule["next_run_at"]) == at("2026-03-01T09:00:00")
        assert datetime.fromisoformat(schedule["last_run_at"]) == at("2026-03-01T06:00:00")
        assert schedule["last_job_id"] == jobs[0]["id"]
        fires = await _fires(runtime)
        assert [f.scheduled_for for f in fires] == [
            at("2026-03-01T03:00:00"),
            at("2026-03-01T06:00:00"),
        ]
        assert {f.trigger for f in fires} == {"cron"}
        assert [f.fired_at for f in fires] == [
            at("2026-03-01T03:00:00"),
            at("2026-03-01T06:00:04"),
        ]

    async def test_company_three_hourly_sync_for_every_tenant(
        self,
        client: httpx.AsyncClient,
        tenants: TenantFactory,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        keys = [(await tenants.create(f"shop-{i}")).api_key for i in range(3)]
        for index, key in enumerate(keys):
            site = f"site-{index}"
            await make_schedule(
                client,
                key,
                name="orders",
                job={"type": "sync-orders", "siteId": site, "lastDays": 40, "bulkMode": True},
            )
            await make_schedule(
                client,
                key,
                name="products",
                job={"type": "sync-products", "siteId": site, "linkVendors": True},
            )
        clock.set(ms(at("2026-03-01T03:00:01")))
        assert await SchedulerRunner(runtime.sessionmaker, runtime.submitter).run_once() == 6
        for index, key in enumerate(keys):
            jobs = (await client.get("/v1/jobs", headers=auth(key))).json()["data"]
            assert sorted(j["type"] for j in jobs) == ["sync-orders", "sync-products"]
            assert {j["payload"]["siteId"] for j in jobs} == {f"site-{index}"}

    async def test_batches_larger_than_one_claim(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        for i in range(7):
            await make_schedule(client, key, name=f"s{i}", cron="*/10 * * * *")
        clock.set(ms(at("2026-03-01T01:40:00")))
        assert (
            await SchedulerRunner(runtime.sessionmaker, runtime.submitter, batch_size=3).run_once()
            == 7
        )
        assert await _count(runtime, Job) == 7


@pytest.mark.usefixtures("scheduler_by_hand")
class TestNotFiring:
    async def test_disabled_schedule_does_not_fire(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        off = await make_schedule(client, key, name="off", enabled=False)
        paused = await make_schedule(client, key, name="paused")
        await client.patch(
            f"/v1/schedules/{paused['id']}", json={"enabled": False}, headers=auth(key)
        )
        runner = SchedulerRunner(runtime.sessionmaker, runtime.submitter)
        clock.set(ms(at("2026-03-02T12:00:00")))
        assert await runner.run_once() == 0
        assert await _count(runtime, Job) == 0
        # Re-enabled, it counts from now: the slots it missed while paused do not fire.
        await client.patch(f"/v1/schedules/{off['id']}", json={"enabled": True}, headers=auth(key))
        assert await runner.run_once() == 0
        clock.set(ms(at("2026-03-02T15:00:00")))
        assert await runner.run_once() == 1
        [fire] = await _fires(runtime)
        assert fire.schedule_id == off["id"]

    async def test_deleted_schedule_does_not_fire(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        created = await make_schedule(client, key)
        await client.delete(f"/v1/schedules/{created['id']}", headers=auth(key))
        clock.set(ms(at("2026-03-01T03:00:00")))
        assert await SchedulerRunner(runtime.sessionmaker, runtime.submitter).run_once() == 0


@pytest.mark.usefixtures("scheduler_by_hand")
class TestMissedOccurrences:
    async def test_after_downtime_only_the_latest_fires(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        created = await make_schedule(client, key)
        missed_before = _metric("jobgate_schedule_missed_occurrences_total")
        # Down from 01:30 until the next day 04:10: nine 3-hourly slots went by.
        clock.set(ms(at("2026-03-02T04:10:00")))
        runner = SchedulerRunner(runtime.sessionmaker, runtime.submitter)
        assert await runner.run_once() == 1
        assert await runner.run_once() == 0
        [fire] = await _fires(runtime)
        assert fire.scheduled_for == at("2026-03-02T03:00:00")
        schedule = await _schedule(runtime, created["id"])
        assert schedule.next_run_at == at("2026-03-02T06:00:00")
        assert _metric("jobgate_schedule_missed_occurrences_total") == missed_before + 1


@pytest.mark.usefixtures("scheduler_by_hand")
class TestFailures:
    async def test_a_job_that_no_longer_validates_is_recorded_and_skipped(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        broken = await make_schedule(client, key, name="broken")
        healthy = await make_schedule(client, key, name="healthy")
        # As if the payload models had changed since the schedule was stored.
        async with runtime.sessionmaker() as session:
            await session.execute(
                update(_schedules)
                .where(_schedules.c.id == broken["id"])
                .values(job={"type": "sync-orders"})
            )
            await session.commit()
        clock.set(ms(at("2026-03-01T03:00:00")))
        assert await SchedulerRunner(runtime.sessionmaker, runtime.submitter).run_once() == 1
        [fire] = await _fires(runtime)
        assert fire.schedule_id == healthy["id"]
        row = await _schedule(runtime, broken["id"])
        assert row.last_error is not None
        assert "siteId" in row.last_error
        assert row.next_run_at == at("2026-03-01T06:00:00")  # it moved on
        assert await _count(runtime, Job) == 1
        manual = await client.post(f"/v1/schedules/{broken['id']}/run", headers=auth(key))
        assert manual.status_code == 422
        assert "siteId" in manual.json()["detail"]


@pytest.mark.usefixtures("scheduler_by_hand")
class TestNoDoubleFire:
    async def test_two_runners_at_once_fire_each_occurrence_once(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        for i in range(12):
            await make_schedule(client, key, name=f"s{i}", cron="0 * * * *")
        clock.set(ms(at("2026-03-01T02:00:00")))
        runners = [
            SchedulerRunner(runtime.sessionmaker, runtime.submitter, batch_size=2) for _ in range(3)
        ]
        counts = await asyncio.gather(*(r.run_once() for r in runners))
        assert sum(counts) == 12
        fires = await _fires(runtime)
        assert len(fires) == 12
        assert len({f.schedule_id for f in fires}) == 12
        assert await _count(runtime, Job) == 12

    async def test_second_runner_skips_a_claimed_schedule(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        await make_schedule(client, key)
        clock.set(ms(at("2026-03-01T03:00:00")))
        now = to_datetime(clock.now_ms())
        async with runtime.sessionmaker() as holder:
            # Runner A claimed and fired but has not committed yet.
            fired = await scheduler_service.fire_due(holder, submitter=runtime.submitter, now=now)
            assert len(fired) == 1
            other = asyncio.create_task(
                SchedulerRunner(runtime.sessionmaker, runtime.submitter).run_once()
            )
            if runtime.engine.dialect.name == "postgresql":
                # SKIP LOCKED: runner B passes over the locked row without waiting.
                assert await asyncio.wait_for(other, timeout=30) == 0
            await holder.commit()
        # On SQLite runner B waited for the write lock and then found nothing due.
        assert await asyncio.wait_for(other, timeout=30) == 0
        assert len(await _fires(runtime)) == 1
        assert await _count(runtime, Job) == 1

    async def test_the_same_occurrence_fired_twice_makes_one_job(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        start: datetime,
    ) -> None:
        """The unique (schedule_id, scheduled_for) key backs up the claim."""
        created = await make_schedule(client, key)
        schedule = await _schedule(runtime, created["id"])
        occurrence = at("2026-03-01T03:00:00")
        now = to_datetime(clock.now_ms())

        async def fire_in_own_session() -> tuple[str, bool]:
            async with runtime.sessionmaker() as session:
                mine = await session.get(Schedule, schedule.id)
                assert mine is not None
                job, created_now = await scheduler_service.fire(
                    session,
                    submitter=runtime.submitter,
                    schedule=mine,
                    scheduled_for=occurrence,
                    trigger="cron",
                    now=now,
                )
                await session.commit()
                return job.id, created_now

        results = await asyncio.gather(*(fire_in_own_session() for _ in range(4)))
        assert len({job_id for job_id, _ in results}) == 1
        assert [created_now for _, created_now in results].count(True) == 1
        assert len(await _fires(runtime)) == 1
        assert await _count(runtime, Job) == 1


class TestWiring:
    async def test_gateway_lifespan_runs_the_scheduler(
        self, runtime: Runtime, clock: ManualClock, tenants: TenantFactory, start: datetime
    ) -> None:
        tenant = await tenants.create()
        app = create_app(runtime=runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await make_schedule(http, tenant.api_key)
        clock.set(ms(at("2026-03-01T03:00:30")))
        async with app.router.lifespan_context(app):
            runner = app.state.scheduler
            assert isinstance(runner, SchedulerRunner)

            async def fired_once() -> bool:
                return await _count(runtime, ScheduleFire) == 1

            await wait_until(fired_once)
        assert runner._stopping  # stopped with the gateway

    @pytest.mark.usefixtures("scheduler_by_hand")
    async def test_fire_writes_the_outbox_row_in_the_same_transaction(
        self,
        client: httpx.AsyncClient,
        key: str,
        runtime: Runtime,
        clock: ManualClock,
        db_engine: AsyncEngine,
        start: datetime,
    ) -> None:
        """With the Cloudflare backend the fire stores the job as accepted plus its outbox row."""
        await make_schedule(client, key)
        settings = runtime.settings.updated(
            queues={"backend": "cloudflare"}, cloudflare={"api_token": "test-token"}
        )
        cloudflare = build_runtime(settings, clock=clock, engine=db_engine)
        try:
            clock.set(ms(at("2026-03-01T03:00:00")))
            assert (
                await SchedulerRunner(cloudflare.sessionmaker, cloudflare.submitter).run_once() == 1
            )
        finally:
            await cloudflare.backend.close()
        [job] = (await client.get("/v1/jobs", headers=auth(key))).json()["data"]
        assert job["status"] == "accepted"
        async with runtime.sessionmaker() as session:
            [row] = (await session.execute(select(OutboxMessage))).scalars().all()
        assert row.job_id == job["id"]
        assert row.queue == "prestashop-sync"


def _diff(connection: Connection) -> list[Any]:
    tables = {"schedule", "schedule_fire"}

    def ours(obj: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        table = name if kind == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in tables

    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": ours}
    )
    return list(compare_metadata(context, metadata))


async def test_migration_matches_models(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        assert await conn.run_sync(_diff) == []
