"""Job operations over real processes: `jobgate serve` + `jobgate consume` on the local
engine, and with `jobgate emulator` on the cloudflare backend.

A job that goes dead is listed, its attempts read, retried alone and in bulk after a dry
run, and then succeeds, its dead letter copy gone; a delayed job cancelled never runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import DatabaseSettings
from app.core.db import create_engine
from app.queues.models import QueueMessage
from tests.consumer.conftest import DLQ, QUEUE
from tests.support.servers import Stack, running_stack

pytestmark = pytest.mark.slow
# Long enough that real time (slow subprocesses under load) never reaches it: the test clock does.
RETRY_DELAY_S = 600


@dataclass
class Ops:
    stack: Stack
    fail_file: Path
    database: tuple[str, str | None]
    operator_key: str

    @property
    def http(self) -> httpx.Client:
        return self.stack.http

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    @property
    def url(self) -> str:
        return self.stack.base_url

    @property
    def tenant_id(self) -> str:
        return self.stack.tenant_id

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
        self.stack.wait_acked()
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
    fail_file = tmp_path / "failing"
    fail_file.touch()
    consumer = {
        "max_batch_size": 10,
        "max_batch_timeout": 0,
        "max_retries": 1,
        "retry_delay": RETRY_DELAY_S,
        "visibility_timeout_ms": 5000,
    }
    extra_env = {
        "JOBGATE_HANDLER_MODULES": "tests.jobs.ops_handlers",
        "JOBGATE_OPS_FAIL_FILE": str(fail_file),
        "JOBGATE_BREAKER_THRESHOLD": "1000",
    }
    with running_stack(
        backend, database, tmp_path, consumer=consumer, extra_env=extra_env
    ) as stack:
        yield Ops(stack, fail_file, database, stack.operator_key())


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
