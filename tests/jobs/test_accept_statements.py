"""No statement on the accept path grows with the backlog.

The same submissions (single, batch, with an idempotency key) are recorded once with an
empty job store and once behind a 10,000-job backlog of the same tenant and queue: they
must send the same statements, and none of them may be an aggregate (a COUNT, SUM...) whose
cost is the backlog's. The tenant's admission state is refreshed by the background refresh
between the two (as it is on a running gateway), not by the requests.
"""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.admission.service import AdmissionControl
from app.bootstrap import Runtime
from app.core.clock import ManualClock
from app.jobs.payloads import SyncSingleOrderJob
from app.main import create_app
from app.tenants.schemas import Principal
from tests.factories import TenantFactory, auth
from tests.support.asgi import asgi_client
from tests.support.statements import add_job_backlog, count_statements, statement_shapes

pytestmark = pytest.mark.asyncio

BACKLOG = 10_000
ORDER = {"type": "sync-single-order", "orderId": 7}
ORDER_JOB = SyncSingleOrderJob(type="sync-single-order", orderId=1)
AGGREGATE = re.compile(r"\b(count|sum|avg|min|max)\s*\(", re.IGNORECASE)


async def _submissions(
    client: httpx.AsyncClient, engine: AsyncEngine, key: str, round_no: int
) -> list[str]:
    # Outside the count: the API key cache expires in real time, whatever the test clock.
    response = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
    assert response.status_code == 202, response.text
    with count_statements(engine) as statements:
        for _ in range(3):
            response = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
            assert response.status_code == 202, response.text
        response = await client.post(
            "/v1/jobs/batch", json={"jobs": [ORDER] * 20}, headers=auth(key)
        )
        assert response.status_code == 202, response.text
        keyed = {**ORDER, "idempotency_key": f"k-{round_no}"}
        for expected in (202, 200):  # new, then its repeat
            response = await client.post("/v1/jobs", json=keyed, headers=auth(key))
            assert response.status_code == expected, response.text
    return statements


async def test_accept_statements_do_not_grow_with_the_backlog(
    runtime: Runtime, tenants: TenantFactory, clock: ManualClock
) -> None:
    tenant = await tenants.create()
    principal = Principal(tenant_id=tenant.tenant_id, scopes=frozenset({"jobs:write"}))
    app = create_app(runtime=runtime)
    admission: AdmissionControl = app.state.admission
    async with asgi_client(app) as client:
        key = tenant.api_key
        # The tenant's first request reads its plan and in-flight count (a cold tenant).
        warm = await client.post("/v1/jobs", json=ORDER, headers=auth(key))
        assert warm.status_code == 202, warm.text
        empty = await _submissions(client, runtime.engine, key, 1)

        await add_job_backlog(runtime, principal, ORDER_JOB, BACKLOG)
        # Past every cache: what the request path knows is refreshed in the background.
        clock.advance(seconds=5)
        await admission.refresh_active()
        await admission.refresh()
        backlog = await _submissions(client, runtime.engine, key, 2)

    assert statement_shapes(empty, 90) == statement_shapes(backlog, 90)
    aggregates = [s for s in empty + backlog if AGGREGATE.search(s)]
    assert aggregates == []
    assert admission.quota.estimate(tenant.tenant_id) >= BACKLOG
