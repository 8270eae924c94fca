"""Every path that creates jobs is charged per job: R2 batches, PrestaShop webhooks, cron fires.
A cron fire refused by admission is recorded on its schedule and retried, never dropped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.models import Job
from app.scheduler.models import Schedule, ScheduleFire
from app.scheduler.runner import SchedulerRunner
from app.webhooks import r2
from app.webhooks.schemas import R2RuleCreate
from tests.admission.conftest import MakeGateway
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio

ORDER = {"type": "sync-single-order", "orderId": 42}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _notification(key: str) -> dict[str, Any]:
    return {
        "account": "3f4b7e3dcab231cbfdaa90a6a28bd548",
        "action": "PutObject",
        "bucket": "images",
        "object": {"key": key, "size": 10, "eTag": "c846ff"},
        "eventTime": "2026-11-28T13:00:00.379Z",
    }


async def _count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


class TestWebhooksChargePerJob:
    async def test_r2_batch_costs_one_jobs_unit_per_notification(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await make_gateway(rate_limit_jobs="5/minute")
        tenant = await tenants.create()
        async with gateway.runtime.sessionmaker() as session:
            await r2.add_rule(
                session,
                tenant_id=tenant.tenant_id,
                rule=R2RuleCreate.model_validate(
                    {"bucket": "images", "prefix": "p/", "operations": [{"type": "alt-text"}]}
                ),
            )
            await session.commit()
        headers = auth(tenant.api_key)

        def batch(*keys: str) -> dict[str, Any]:
            return {"messages": [_notification(k) for k in keys]}

        # Six notifications with a rule make six jobs: over a budget of five, refused whole.
        refused = await gateway.http.post(
            "/v1/webhooks/r2", json=batch(*(f"p/{i}.jpg" for i in range(6))), headers=headers
        )
        assert refused.status_code == 429, refused.text
        assert "costs 6 jobs units" in refused.json()["detail"]
        assert await _count(gateway.runtime, Job) == 0
        # Notifications no rule matches make no job and cost nothing.
        accepted = await gateway.http.post(
            "/v1/webhooks/r2",
            json=batch("p/a.jpg", "p/b.jpg", "p/c.jpg", "other/x.jpg"),
            headers=headers,
        )
        assert accepted.status_code == 202, accepted.text
        assert len(accepted.json()["jobs"]) == 3
        assert '"jobs";r=2;' in accepted.headers["RateLimit"]
        # Redelivered objects make no new job and cost no jobs unit.
        again = await gateway.http.post(
            "/v1/webhooks/r2", json=batch("p/a.jpg", "p/b.jpg", "p/c.jpg"), headers=headers
        )
        assert again.status_code == 200, again.text
        assert again.json()["jobs"] == accepted.json()["jobs"]
        # The same budget as POST /v1/jobs: two more fit, a third does not.
        for _ in range(2):
            ok = await gateway.http.post("/v1/jobs", json=ORDER, headers=headers)
            assert ok.status_code == 202
        over = await gateway.http.post("/v1/jobs", json=ORDER, headers=headers)
        assert over.status_code == 429
        assert await _count(gateway.runtime, Job) == 5

    async def test_prestashop_webhook_admission_spends_the_jobs_budget(
        self, make_gateway: MakeGateway, tenants: TenantFactory
    ) -> None:
        gateway = await make_gateway(rate_limit_jobs="2/minute")
        tenant = await tenants.create()
        async with gateway.runtime.sessionmaker() as session:
            admitted = await gateway.admission.admit_webhook(
                session, tenant.tenant_id, ["sync-single-order", "sync-single-order"]
            )
        assert '"jobs";r=0;' in admitted.headers["RateLimit"]
        refused = await gateway.http.post("/v1/jobs", json=ORDER, headers=auth(tenant.api_key))
        assert refused.status_code == 429


@pytest.mark.usefixtures("scheduler_by_hand")
class TestCronFiresAreAdmitted:
    async def test_a_refused_fire_is_recorded_and_retried_not_dropped(
        self, make_gateway: MakeGateway, tenants: TenantFactory, clock: ManualClock
    ) -> None:
        clock.set(_ms(datetime(2026, 3, 1, 1, 30, tzinfo=UTC)))
        gateway = await make_gateway(rate_limit_jobs="1/minute")
        tenant = await tenants.create()
        headers = auth(tenant.api_key)
        created = await gateway.http.post(
            "/v1/schedules",
            json={"name": "orders", "cron": "0 */3 * * *", "job": ORDER},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        # The tenant spends its whole budget itself.
        assert (await gateway.http.post("/v1/jobs", json=ORDER, headers=headers)).status_code == 202

        occurrence = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
        clock.set(_ms(occurrence))
        runner = SchedulerRunner(
            gateway.runtime.sessionmaker, gateway.runtime.submitter, admission=gateway.admission
        )
        assert await runner.run_once() == 0
        assert await _count(gateway.runtime, Job) == 1
        assert await _count(gateway.runtime, ScheduleFire) == 0
        seen = (await gateway.http.get(f"/v1/schedules/{schedule_id}", headers=headers)).json()
        assert (
            "admission refused the fire for 2026-03-01T03:00:00Z (rate_limit)"
            in (seen["last_error"])
        )
        assert seen["retry_at"] is not None
        assert seen["next_run_at"].startswith("2026-03-01T03:00:00")  # not skipped
        retry_at = datetime.fromisoformat(seen["retry_at"].replace("Z", "+00:00"))
        assert retry_at > occurrence

        # Before retry_at nothing is tried again; after it, the same occurrence fires once
        # (a fresh gateway stands for the budget's window having reset).
        assert await runner.run_once() == 0
        clock.set(_ms(retry_at))
        fresh = await make_gateway()
        assert (
            await SchedulerRunner(
                fresh.runtime.sessionmaker, fresh.runtime.submitter, admission=fresh.admission
            ).run_once()
            == 1
        )
        async with fresh.runtime.sessionmaker() as session:
            fire = (await session.execute(select(ScheduleFire))).scalar_one()
            schedule = await session.get(Schedule, schedule_id)
        assert fire.scheduled_for == occurrence
        assert schedule is not None
        assert schedule.retry_at is None
        assert schedule.last_error is None
        assert schedule.next_run_at == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
        assert await _count(fresh.runtime, Job) == 2
