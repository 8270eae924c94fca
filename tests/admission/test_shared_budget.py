"""Two real `jobgate serve` processes sharing the real Redis enforce one budget per tenant."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.factories import auth
from tests.support.servers import create_tenant, jobgate_env, jobgate_server

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

ORDER = {"type": "sync-single-order", "orderId": 42}
LIMIT = 10


async def test_two_gateways_enforce_one_budget(
    database: tuple[str, str | None], redis_prefix: str
) -> None:
    url, schema = database
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_REDIS_URL": REDIS_URL,
            "JOBGATE_ADMISSION_REDIS_PREFIX": redis_prefix,
            "JOBGATE_RATE_LIMIT_JOBS": f"{LIMIT}/minute",
        },
    )
    alternating = await asyncio.to_thread(create_tenant, env, f"alt-{redis_prefix}")
    burst = await asyncio.to_thread(create_tenant, env, f"burst-{redis_prefix}")

    with jobgate_server("serve", env=env) as first, jobgate_server("serve", env=env) as second:
        async with (
            httpx.AsyncClient(base_url=first.base_url, timeout=30.0) as a,
            httpx.AsyncClient(base_url=second.base_url, timeout=30.0) as b,
        ):
            # Alternate: each gateway alone sees only half the budget's worth of jobs.
            headers = auth(alternating["api_key"])
            answers = [
                await (a if i % 2 == 0 else b).post("/v1/jobs", json=ORDER, headers=headers)
                for i in range(LIMIT + 4)
            ]
            statuses = [r.status_code for r in answers]
            assert statuses == [202] * LIMIT + [429] * 4, [r.text for r in answers]
            for refused in answers[LIMIT:]:
                assert 1 <= int(refused.headers["Retry-After"]) <= 61
                assert refused.headers["RateLimit-Remaining"] == "0"
            assert answers[LIMIT - 1].headers["RateLimit-Remaining"] == "0"

            # A concurrent burst split over both gateways: exactly the budget gets in.
            headers = auth(burst["api_key"])
            burst_answers = await asyncio.gather(
                *(
                    (a if i % 2 == 0 else b).post("/v1/jobs", json=ORDER, headers=headers)
                    for i in range(3 * LIMIT)
                )
            )
            codes = sorted(r.status_code for r in burst_answers)
            assert codes == [202] * LIMIT + [429] * (2 * LIMIT)

            # Every accepted job is stored; nothing of the refused ones is.
            for tenant, accepted in ((alternating, answers), (burst, burst_answers)):
                listed = await a.get(
                    "/v1/jobs", params={"limit": 100}, headers=auth(tenant["api_key"])
                )
                stored = {job["id"] for job in listed.json()["data"]}
                assert stored == {r.json()["id"] for r in accepted if r.status_code == 202}
