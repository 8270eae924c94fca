"""Queue controls over real processes, on both backends: `jobgate serve` + `jobgate consume`
on the local engine, and the same with the Cloudflare backend against `jobgate emulator`.

A paused queue accepts jobs and delivers none (the consumer stays quiet: no error, no
breaker) until it is resumed; a purge empties it and cancels its waiting jobs; the numbers
of `GET /v1/admin/queues` follow a running job and a dead one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import Stack, running_stack

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
    # No retry: a failing job dies at once, into the dead letter queue.
    consumer = {"max_batch_size": 10, "max_batch_timeout": 0, "max_retries": 0}
    extra_env = {
        "JOBGATE_HANDLER_MODULES": "tests.consumer.e2e_handlers",
        "JOBGATE_E2E_BLOCK_FILE": str(tmp_path / "block"),
    }
    with running_stack(
        request.param, database, tmp_path, consumer=consumer, extra_env=extra_env
    ) as stack:
        yield Controls(stack, stack.operator_key())


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
