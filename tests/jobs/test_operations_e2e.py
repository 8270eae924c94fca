"""Job operations over real processes: `jobgate serve` + `jobgate consume` on the local
engine, and with `jobgate emulator` on the cloudflare backend.

A job that goes dead is listed, its attempts read, retried alone and in bulk after a dry
run, and then succeeds, its dead letter copy gone; a delayed job cancelled never runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT, DatabaseSettings
from app.core.db import create_engine
from app.queues.models import QueueMessage
from tests.consumer.conftest import DLQ, QUEUE, write_topology
from tests.consumer.test_e2e import Consumer, Stack
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.support.servers import create_tenant, jobgate_env, jobgate_server, run_jobgate

pytestmark = pytest.mark.slow
# Long enough that real time (slow subprocesses under load) never reaches it: the test clock does.
RETRY_DELAY_S = 600


@dataclass
class Ops:
    stack: Stack
    env: dict[str, str]
    url: str
    operator_key: str
    fail_file: Path
    database: tuple[str, str | None]
    tenant_id: str

    @property
    def http(self) -> httpx.Client:
        return self.stack.http

    def submit(self, **extra: Any) -> str:
        body = {"type": "analytics-event", "name": "ops", **extra}
        response = self.http.post("/v1/jobs", json=body, headers=self.stack.headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def until_dead(self, job_ids: list[str]) -> None:
        """Both attempts fail: the first at once, the second after the retry delay."""
        self.stack.wait(
            "first attempts",
            lambda: all(self.stack.job(j)["status"] in ("retrying", "dead") for j in job_ids),
        )
        self.stack.advance(RETRY_DELAY_S)
        self.stack.wait("dead", lambda: all(self.stack.job(j)["status"] == "dead" for j in job_ids))

    def queue_backlog(self, queue: str) -> int:
        emulator = self.stack.emulator
        if emulator is not None:
            for state in emulator.control("GET", "state")["queues"]:
                if state["queue_name"] == queue:
                    return int(state["metrics"]["backlog_count"])
            return 0
        return asyncio.run(_local_backlog(self.database, queue))


async def _local_backlog(database: tuple[str, str | None], queue: str) -> int:
    engine = create_engine(DatabaseSettings(url=database[0]), search_path=database[1])
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(QueueMessage).where(QueueMessage.queue == queue)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


@contextmanager
def running_ops(backend: str, database: tuple[str, str | None], tmp_path: Path) -> Iterator[Ops]:
    """A gateway and a consumer of `analytics-events` (2 attempts a job) on `backend`, a
    tenant and an operator key; analytics jobs fail while `Ops.fail_file` exists."""
    url, schema = database
    emulator: Emulator | None = None
    backend_env: dict[str, str] = {}
    if backend == "cloudflare":
        emulator = Emulator(start_emulator(emulator_env(database)))
        backend_env = {
            "JOBGATE_QUEUE_BACKEND": "cloudflare",
            "JOBGATE_CF_API_TOKEN": TOKEN,
            "JOBGATE_CF_ACCOUNT_ID": ACCOUNT,
            "JOBGATE_CF_API_BASE_URL": emulator.api_url,
            "JOBGATE_OUTBOX_LINGER_MS": "0",
            "JOBGATE_OUTBOX_POLL_MS": "50",
        }
    clock_file = tmp_path / "clock"
    write_clock_offset(clock_file, 0)
    fail_file = tmp_path / "failing"
    fail_file.touch()
    topology = write_topology(
        tmp_path / "wrangler.jsonc",
        {
            "max_batch_size": 10,
            "max_batch_timeout": 0,
            "max_retries": 1,
            "retry_delay": RETRY_DELAY_S,
            "visibility_timeout_ms": 5000,
        },
    )
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_TEST_CLOCK_FILE": str(clock_file),
            "JOBGATE_HANDLER_MODULES": "tests.jobs.ops_handlers",
            "JOBGATE_OPS_FAIL_FILE": str(fail_file),
            "JOBGATE_BREAKER_THRESHOLD": "1000",
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "PYTHONPATH": str(REPO_ROOT),
            **backend_env,
        },
    )
    try:
        tenant = create_tenant(env, "ops")
        operator_key = json.loads(run_jobgate("operators", "create", "ops", "--json", env=env))[
            "api_key"
        ]
        consumer = Consumer(env, tmp_path)
        with jobgate_server("serve", env=env) as gateway:
            consumer.start()
            with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
                try:
                    yield Ops(
                        Stack(http, consumer, clock_file, tenant["api_key"], emulator),
                        env,
                        gateway.base_url,
                        operator_key,
                        fail_file,
                        database,
                        tenant["tenant_id"],
                    )
                finally:
                    consumer.terminate()
    finally:
        if emulator is not None:
            emulator.close()


@pytest.fixture(params=["local", "cloudflare"])
def ops(
    request: pytest.FixtureRequest,
    database: tuple[str, str | None],
    db_engine: object,
    tmp_path: Path,
) -> Iterator[Ops]:
    with running_ops(request.param, database, tmp_path) as running:
        yield running


def test_dead_jobs_are_listed_read_retried_alone_and_in_bulk_then_succeed(ops: Ops) -> None:
    stack, http, headers = ops.stack, ops.http, ops.stack.headers
    jobs = [ops.submit(properties={"n": n}) for n in range(3)]
    ops.until_dead(jobs)
    listed = http.get("/v1/jobs?status=dead", headers=headers).json()["data"]
    assert sorted(job["id"] for job in listed) == sorted(jobs)
    attempts = http.get(f"/v1/jobs/{jobs[0]}/attempts", headers=headers).json()["data"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "retry"), (2, "dead")]
    assert all("upstream outage" in a["error"] for a in attempts)
    stack.wait("3 dead letters", lambda: ops.queue_backlog(DLQ) == 3)

    ops.fail_file.unlink()  # the outage is over
    response = http.post(f"/v1/jobs/{jobs[0]}/retry", headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    stack.wait("retried job succeeded", lambda: stack.job(jobs[0])["status"] == "succeeded")
    assert ops.queue_backlog(DLQ) == 2

    body = {"status": "dead", "type": "analytics-event", "dry_run": True}
    assert http.post("/v1/jobs/retry", json=body, headers=headers).json() == {
        "matched": 2,
        "retried": 0,
    }
    assert [stack.job(j)["status"] for j in jobs[1:]] == ["dead", "dead"]
    body["dry_run"] = False
    assert http.post("/v1/jobs/retry", json=body, headers=headers).json() == {
        "matched": 2,
        "retried": 2,
    }
    stack.wait("all succeeded", lambda: all(stack.job(j)["status"] == "succeeded" for j in jobs))
    assert ops.queue_backlog(DLQ) == 0
    done = stack.job(jobs[1])
    assert done["attempts"] == 3  # the history goes on: attempts 1 and 2 failed
    assert [
        a["outcome"]
        for a in http.get(f"/v1/jobs/{jobs[1]}/attempts", headers=headers).json()["data"]
    ] == ["retry", "dead", "succeeded"]


def test_a_cancelled_delayed_job_never_runs(ops: Ops) -> None:
    stack, http, headers = ops.stack, ops.http, ops.stack.headers
    ops.fail_file.unlink()
    job_id = ops.submit(delay_seconds=30)
    if stack.emulator is not None:  # published by the relay first
        stack.wait("published", lambda: stack.job(job_id)["status"] == "queued")
    response = http.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    stack.advance(31)
    # Delivered after its delay and acked unrun.
    stack.wait("message consumed", lambda: ops.queue_backlog(QUEUE) == 0)
    body = stack.job(job_id)
    assert (body["status"], body["attempts"]) == ("cancelled", 0)
    assert http.get(f"/v1/jobs/{job_id}/attempts", headers=headers).json() == {"data": []}
    assert http.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 409
