"""Per-tenant budgets in memory and in the real Redis (127.0.0.1:6379)."""

from __future__ import annotations

import pytest
from limits import parse

from app.admission.errors import RateLimited
from app.admission.limiter import (
    Charge,
    LimiterUnavailable,
    RouteClass,
    Standing,
    TenantLimiter,
    rate_limit_headers,
    storage_uri,
)
from tests.conftest import REDIS_URL

JOBS = RouteClass.jobs


def _jobs(limit: str, cost: int = 1) -> list[Charge]:
    return [Charge(JOBS, parse(limit), cost)]


class TestStorageUri:
    def test_maps_settings_to_limits_storage(self) -> None:
        assert storage_uri(None) == "async+memory://"
        assert storage_uri("redis://h:6379/2") == "async+redis://h:6379/2"
        assert storage_uri("async+redis://h:6379/2") == "async+redis://h:6379/2"


class TestHeaders:
    def test_both_header_generations(self) -> None:
        standings = [
            Standing(JOBS, limit=600, remaining=10, window_seconds=60, reset_at=1000.2),
            Standing(RouteClass.batch, limit=120, remaining=3, window_seconds=60, reset_at=1030),
        ]
        assert rate_limit_headers(standings, now=1000.0) == {
            "RateLimit-Limit": "600",
            "RateLimit-Remaining": "10",
            "RateLimit-Reset": "1",
            "RateLimit-Policy": '"jobs";q=600;w=60, "batch";q=120;w=60',
            "RateLimit": '"jobs";r=10;t=1, "batch";r=3;t=30',
        }


@pytest.mark.asyncio
class TestMemory:
    async def test_n_plus_first_is_refused_with_the_window_reset(self) -> None:
        limiter = TenantLimiter()
        for left in (2, 1, 0):
            [standing] = await limiter.charge("t1", _jobs("3/minute"))
            assert standing.remaining == left
        with pytest.raises(RateLimited) as refused:
            await limiter.charge("t1", _jobs("3/minute"))
        assert 59 <= refused.value.retry_after <= 60
        assert refused.value.headers["Retry-After"] == str(refused.value.retry_after)
        assert refused.value.headers["RateLimit-Remaining"] == "0"
        # Another tenant, and another route class, have their own budgets.
        await limiter.charge("t2", _jobs("3/minute"))
        await limiter.charge("t1", [Charge(RouteClass.reads, parse("3/minute"))])

    async def test_a_charge_is_all_or_nothing(self) -> None:
        limiter = TenantLimiter()
        charges = [Charge(RouteClass.batch, parse("5/minute")), Charge(JOBS, parse("4/minute"), 3)]
        await limiter.charge("t", charges)
        with pytest.raises(RateLimited):
            await limiter.charge("t", charges)  # jobs: 1 left, needs 3
        # Nothing of the refused charge was spent, in either budget.
        [batch, jobs] = await limiter.charge(
            "t", [Charge(RouteClass.batch, parse("5/minute")), Charge(JOBS, parse("4/minute"))]
        )
        assert (batch.remaining, jobs.remaining) == (3, 0)

    async def test_a_cost_above_the_limit_says_so(self) -> None:
        limiter = TenantLimiter()
        with pytest.raises(RateLimited) as refused:
            await limiter.charge("t", _jobs("10/minute", cost=11))
        assert "send fewer jobs per request" in refused.value.detail


@pytest.mark.asyncio
class TestRedis:
    async def test_two_limiters_share_one_budget(self, redis_prefix: str) -> None:
        first = TenantLimiter(REDIS_URL, prefix=redis_prefix)
        second = TenantLimiter(REDIS_URL, prefix=redis_prefix)
        elsewhere = TenantLimiter(REDIS_URL, prefix=redis_prefix + "-other")
        try:
            for attempt in range(5):
                await (first if attempt % 2 == 0 else second).charge("t", _jobs("5/minute"))
            for limiter in (first, second):
                with pytest.raises(RateLimited) as refused:
                    await limiter.charge("t", _jobs("5/minute"))
                assert 58 <= refused.value.retry_after <= 61
            # A different key prefix is a different budget.
            await elsewhere.charge("t", _jobs("5/minute"))
        finally:
            for limiter in (first, second, elsewhere):
                await limiter.close()

    async def test_batch_cost_is_shared_too(self, redis_prefix: str) -> None:
        first = TenantLimiter(REDIS_URL, prefix=redis_prefix)
        second = TenantLimiter(REDIS_URL, prefix=redis_prefix)
        try:
            await first.charge("t", _jobs("10/minute", cost=7))
            with pytest.raises(RateLimited):
                await second.charge("t", _jobs("10/minute", cost=4))
            [standing] = await second.charge("t", _jobs("10/minute", cost=3))
            assert standing.remaining == 0
        finally:
            await first.close()
            await second.close()

    async def test_unreachable_redis_is_reported(self) -> None:
        limiter = TenantLimiter("redis://127.0.0.1:1/0", prefix="x")
        try:
            with pytest.raises(LimiterUnavailable):
                await limiter.charge("t", _jobs("5/minute"))
        finally:
            await limiter.close()
