"""Queue controls over real processes, on both backends: `jobgate serve` + `jobgate consume`
on the local engine, and the same with the Cloudflare backend against `jobgate emulator`.

A paused queue accepts jobs and delivers none (the consumer stays quiet: no error, no
breaker) until it is resumed; a purge empties it and cancels its waiting jobs; the numbers
of `GET /v1/admin/queues` follow a running job and a dead one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT
from tests.consumer.conftest import write_topology
from tests.consumer.test_e2e import Consumer, Stack
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.support.servers import create_tenant, jobgate_env, jobgate_server, run_jobgate

pytestmark = pytest.mark.slow
QUEUE = "analytics-events"
DLQ = "analytics-events-dlq"


class Controls:
    def __init__(self, stack: Stack, operator_key: str) -> None:
        self.stack = stack
        self.headers = {"Authorization": f"Bearer {operator_key}"}

    def queue(self, name: str = QUEUE) -> dict[str, Any]:
        response = self.stack.http.get("/v1/admin/queues", headers=self.headers)
        assert response.status_code == 200, response.text
        rows: dict[str, dict[str, Any]] = {r["name"]: r for r in response.json()["data"]}
        return rows[name]

    def post(self, action: str, body: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.stack.http.post(
            f"/v1/admin/queues/{QUEUE}/{action}", json=body, headers=self.headers
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def statuses(self, job_ids: list[str]) -> set[str]:
        return {self.stack.job(j)["status"] for j in job_ids}


@pytest.fixture(params=["local", "cloudflare"])
def controls(
    request: pytest.FixtureRequest,
    database: tuple[str, str | None],
    db_engine: object,
    tmp_path: Path,
) -> Iterator[Controls]:
    url, schema = database
    emulator: Emulator | None = None
    backend_env: dict[str, str] = {}
    if request.param == "cloudflare":
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
    # No retry: a failing job dies at once, into the dead letter queue.
    topology = write_topology(
        tmp_path / "wrangler.jsonc",
        {"max_batch_size": 10, "max_batch_timeout": 0, "max_retries": 0},
    )
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_WRANGLER_CONFIG": str(topology),
            "JOBGATE_TEST_CLOCK_FILE": str(clock_file),
            "JOBGATE_HANDLER_MODULES": "tests.consumer.e2e_handlers",
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_E2E_BLOCK_FILE": str(tmp_path / "block"),
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "PYTHONPATH": str(REPO_ROOT),
            **backend_env,
        },
    )
    try:
        key = create_tenant(env, "e2e")["api_key"]
        operator_key = json.loads(run_jobgate("operators", "create", "ops", "--json", env=env))
        consumer = Consumer(env, tmp_path)
        with jobgate_server("serve", env=env) as gateway:
            consumer.start()
            with httpx.Client(base_url=gateway.base_url, timeout=30) as http:
                try:
                    yield Controls(
                        Stack(http, consumer, clock_file, key, emulator),
                        operator_key["api_key"],
                    )
                finally:
                    consumer.terminate()
    finally:
        if emulator is not None:
            emulator.close()


def test_a_paused_queue_accepts_jobs_and_runs_them_once_resumed(controls: Controls) -> None:
    stack = controls.stack
    assert controls.post("pause")["paused"] is True
    jobs = [stack.submit("ok") for _ in range(3)]
    stack.wait("published", lambda: controls.statuses(jobs) == {"queued"})
    stack.wait("in the backlog", lambda: controls.queue()["backlog"] == 3)
    time.sleep(2.0)  # the consumer polls every 50-200 ms: it would have run them by now
    assert controls.statuses(jobs) == {"queued"}
    row = controls.queue()
    assert (row["backlog"], row["in_flight"], row["paused"]) == (3, 0, True)

    assert controls.post("resume")["paused"] is False
    stack.wait("all succeeded", lambda: controls.statuses(jobs) == {"succeeded"})
    stack.wait("drained", lambda: controls.queue()["backlog"] == 0)
    # Pulling a paused queue is not an error (Cloudflare answers code 10252): nothing logged.
    output = stack.consumer.output()
    assert "Traceback" not in output
    assert "failed" not in output
    assert "10252" not in output


def test_purge_empties_the_queue_and_cancels_its_jobs(controls: Controls) -> None:
    stack = controls.stack
    controls.post("pause")
    jobs = [stack.submit("ok") for _ in range(3)]
    stack.wait("published", lambda: controls.statuses(jobs) == {"queued"})
    stack.wait("in the backlog", lambda: controls.queue()["backlog"] == 3)

    purged = controls.post("purge", {"confirm": QUEUE})
    assert purged["cancelled_jobs"] == 3
    assert purged["purged"] in (3, None)  # Cloudflare does not say how many
    assert controls.queue()["backlog"] == 0
    assert controls.statuses(jobs) == {"cancelled"}
    assert "purged" in stack.job(jobs[0])["last_error"]

    controls.post("resume")
    later = stack.submit("ok")
    stack.wait("a new job runs", lambda: stack.job(later)["status"] == "succeeded")
    assert controls.statuses(jobs) == {"cancelled"}


def test_numbers_follow_a_running_job_and_a_dead_one(controls: Controls, tmp_path: Path) -> None:
    stack = controls.stack
    block = tmp_path / "block"
    block.touch()
    running = stack.submit("block")
    stack.wait("running", lambda: stack.job(running)["status"] == "running")
    row = controls.queue()
    assert (row["backlog"], row["in_flight"]) == (1, 1)
    assert row["oldest_age_seconds"] is not None
    block.unlink()
    stack.wait("succeeded", lambda: stack.job(running)["status"] == "succeeded")
    stack.wait("acked", lambda: controls.queue()["in_flight"] == 0)

    dead = stack.submit("fail")
    stack.wait("dead", lambda: stack.job(dead)["status"] == "dead")
    stack.wait("in the DLQ", lambda: controls.queue()["dead_letter_backlog"] == 1)
    row = controls.queue()
    assert (row["dead_letter_queue"], row["backlog"]) == (DLQ, 0)
    assert controls.queue(DLQ)["backlog"] == 1
