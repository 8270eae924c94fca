"""The dashboard's buttons act through the jobs service: retry, cancel, retry the selected
dead jobs, retry every dead job of a filter after a dry run. Real local engine and consumer
(`run_once()`), as in the job operations tests."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app.consumer.registry import HandlerRegistry, JobContext
from app.jobs.payloads import AnalyticsEventPayload
from app.tenants.schemas import Scope
from tests.consumer.conftest import Harness, MakeHarness
from tests.consumer.conftest import make_harness as make_harness  # a fixture
from tests.dashboard.conftest import BROWSER, csrf_of, login, operator_key_for
from tests.factories import TenantFactory, auth

pytestmark = pytest.mark.asyncio


class Flaky:
    def __init__(self) -> None:
        self.failing = True
        self.registry = HandlerRegistry()

        @self.registry.handler("analytics-event", AnalyticsEventPayload)
        async def handle(ctx: JobContext[AnalyticsEventPayload]) -> None:
            if self.failing:
                raise RuntimeError("boom: upstream down")


async def _harness(make: MakeHarness, handlers: Flaky) -> Harness:
    return await make(
        handlers.registry,
        tenants=("a", "b"),
        max_retries=1,
        retry_delay=10,
        settings_update={"breaker": {"threshold": 1000}},
    )


async def _dead(h: Harness, tenant: str = "a", **properties: Any) -> str:
    job_id = await h.submit(tenant, **properties)
    for _ in range(4):
        await h.consumer.run_once()
        if (await h.job(job_id)).status == "dead":
            break
        h.clock.advance(seconds=10)
    assert (await h.job(job_id)).status == "dead"
    return job_id


async def _admin(h: Harness, tenant: str) -> str:
    return await TenantFactory(h.runtime).key(h.tenant_ids[tenant], [Scope.admin])


async def _status(h: Harness, job_id: str) -> str:
    return (await h.job(job_id)).status


async def test_retry_button_runs_a_dead_job_again(make_harness: MakeHarness) -> None:
    handlers = Flaky()
    h = await _harness(make_harness, handlers)
    job_id = await _dead(h)
    client: httpx.AsyncClient = h.client
    await login(client, await _admin(h, "a"))
    page = await client.get(f"/dashboard/jobs/{job_id}", headers=BROWSER)
    assert page.status_code == 200
    assert 'id="retry"' in page.text
    assert 'id="cancel"' not in page.text
    assert "boom: upstream down" in page.text  # the attempts' errors
    assert len(re.findall(r"<td>dead</td>", page.text)) >= 1  # the events

    # Another tenant's admin cannot even see it.
    other = await _admin(h, "b")
    refused = await client.post(f"/dashboard/jobs/{job_id}/retry", headers=auth(other))
    assert refused.status_code == 404
    assert await _status(h, job_id) == "dead"

    done = await client.post(
        f"/dashboard/jobs/{job_id}/retry", data={"csrf": csrf_of(page.text)}, headers=BROWSER
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/dashboard/jobs/{job_id}"
    assert await _status(h, job_id) == "queued"
    again = await client.post(
        f"/dashboard/jobs/{job_id}/retry", data={"csrf": csrf_of(page.text)}, headers=BROWSER
    )
    assert again.status_code == 409  # queued: nothing to retry

    handlers.failing = False
    await h.consumer.run_once()
    assert await _status(h, job_id) == "succeeded"


async def test_cancel_button_on_a_delayed_job(make_harness: MakeHarness) -> None:
    h = await _harness(make_harness, Flaky())
    submitted = await h.client.post(
        "/v1/jobs",
        json={"type": "analytics-event", "name": "later", "delay_seconds": 3600},
        headers=auth(h.keys["a"]),
    )
    job_id = submitted.json()["id"]
    operator = await operator_key_for(h.runtime)
    page = await h.client.get(f"/dashboard/jobs/{job_id}", headers=auth(operator))
    assert 'id="cancel"' in page.text
    assert '<meta http-equiv="refresh"' in page.text  # unfinished: the page follows it
    done = await h.client.post(f"/dashboard/jobs/{job_id}/cancel", headers=auth(operator))
    assert done.status_code == 303
    assert await _status(h, job_id) == "cancelled"
    h.clock.advance(seconds=3601)
    await h.consumer.run_once()
    assert await _status(h, job_id) == "cancelled"


async def test_dead_letters_retry_selected_and_all_after_a_dry_run(
    make_harness: MakeHarness,
) -> None:
    handlers = Flaky()
    h = await _harness(make_harness, handlers)
    first, second, third = [await _dead(h) for _ in range(3)]
    theirs = await _dead(h, "b")
    client: httpx.AsyncClient = h.client
    await login(client, await _admin(h, "a"))
    page = await client.get("/dashboard/dlq", headers=BROWSER)
    for job_id in (first, second, third):
        assert f'value="{job_id}"' in page.text
    assert theirs not in page.text
    csrf = csrf_of(page.text)

    # Selecting another tenant's job fails the whole selection, like a missing one.
    refused = await client.post(
        "/dashboard/dlq/retry",
        data={"csrf": csrf, "job_id": [first, theirs]},
        headers=BROWSER,
    )
    assert refused.status_code == 404
    assert await _status(h, first) == "dead"

    done = await client.post(
        "/dashboard/dlq/retry", data={"csrf": csrf, "job_id": [first, second]}, headers=BROWSER
    )
    assert done.status_code == 303
    assert [await _status(h, j) for j in (first, second, third)] == ["queued", "queued", "dead"]

    dry = await client.get("/dashboard/dlq/retry-all", headers=BROWSER)
    assert re.search(r'id="matched">1<', dry.text), dry.text
    assert await _status(h, third) == "dead"  # a dry run changes nothing
    bulk = await client.post(
        "/dashboard/dlq/retry-all", data={"csrf": csrf_of(dry.text), "queue": ""}, headers=BROWSER
    )
    assert bulk.status_code == 303
    assert await _status(h, third) == "queued"
    assert await _status(h, theirs) == "dead"  # the tenant's own jobs only

    handlers.failing = False
    for _ in range(3):
        await h.consumer.run_once()
    assert [await _status(h, j) for j in (first, second, third)] == ["succeeded"] * 3
