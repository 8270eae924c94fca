"""`jobgate jobs` and `jobgate dlq` as a shell runs them (subprocesses) against a live
gateway and consumer on the local engine."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cli.gateway import problem_lines
from tests.jobs.test_operations_e2e import Ops, running_ops
from tests.support.servers import call_jobgate

pytestmark = pytest.mark.slow


@pytest.fixture
def ops(database: tuple[str, str | None], db_engine: object, tmp_path: Path) -> Iterator[Ops]:
    with running_ops("local", database, tmp_path) as running:
        yield running


def _cli(
    ops: Ops, *args: str, key: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **ops.env,
        "JOBGATE_URL": ops.url,
        "JOBGATE_KEY": key or ops.stack.headers["Authorization"].removeprefix("Bearer "),
        "COLUMNS": "200",
    }
    return call_jobgate(*args, env=env, stdin=stdin)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _ok(done).splitlines()]


def test_jobs_and_dlq_commands_drive_a_dead_job_back_to_success(ops: Ops) -> None:
    submitted = [
        _lines(_cli(ops, "jobs", "submit", "analytics-event", "-f", f"name=cli-{n}", "--json"))[0]
        for n in range(2)
    ]
    ids = [job["id"] for job in submitted]
    ops.until_dead(ids)

    dead = _lines(_cli(ops, "jobs", "list", "--status", "dead", "--json"))
    assert sorted(job["id"] for job in dead) == sorted(ids)
    human = _ok(_cli(ops, "dlq", "list"))
    assert "dead jobs (2)" in human
    assert all(job_id in human for job_id in ids)
    attempts = _lines(_cli(ops, "jobs", "attempts", ids[0], "--json"))
    assert [a["outcome"] for a in attempts] == ["retry", "dead"]
    assert "upstream outage" in _ok(_cli(ops, "jobs", "attempts", ids[0]))

    ops.fail_file.unlink()
    [retried] = _lines(_cli(ops, "jobs", "retry", ids[0], "--json"))
    assert retried["status"] == "queued"
    watched = _lines(_cli(ops, "jobs", "watch", ids[0], "--json", "--interval", "0.1"))
    assert watched[-1]["status"] == "succeeded"

    # Bulk: the dry run's count is shown and nothing happens without a yes.
    declined = _cli(ops, "dlq", "retry", stdin="n\n")
    assert declined.returncode == 1
    assert "Retry 1 dead job?" in declined.stderr
    assert _lines(_cli(ops, "jobs", "get", ids[1], "--json"))[0]["status"] == "dead"
    accepted = _cli(ops, "dlq", "retry", "--queue", "analytics-events", stdin="y\n")
    assert _ok(accepted).strip() == "retried 1 job"
    done = _cli(ops, "jobs", "watch", ids[1], "--interval", "0.1")
    assert _ok(done).split() == [ids[1], "succeeded"]
    assert _lines(_cli(ops, "jobs", "retry", "--status", "dead", "--yes", "--json")) == [
        {"matched": 0, "retried": 0}
    ]


def test_cancel_errors_and_the_operator_view(ops: Ops) -> None:
    # Purge: the operator's, confirmed by name; a dead job stays dead, its copy is gone.
    [dead] = _lines(_cli(ops, "jobs", "submit", "analytics-event", "-f", "name=gone", "--json"))
    ops.until_dead([dead["id"]])
    assert ops.queue_backlog("analytics-events-dlq") == 1
    refused = _cli(ops, "dlq", "purge", "analytics-events-dlq", "--yes")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: 403 Forbidden: ")
    purged = _lines(
        _cli(ops, "dlq", "purge", "analytics-events-dlq", "--yes", "--json", key=ops.operator_key)
    )
    assert purged[0]["purged"] == 1
    assert ops.queue_backlog("analytics-events-dlq") == 0
    assert _lines(_cli(ops, "jobs", "get", dead["id"], "--json"))[0]["status"] == "dead"
    ops.fail_file.unlink()
    [job] = _lines(
        _cli(
            ops,
            "jobs",
            "submit",
            "analytics-event",
            "-d",
            '{"name": "later"}',
            "--delay",
            "600",
            "--json",
        )
    )
    assert _ok(_cli(ops, "jobs", "cancel", job["id"])).split() == [job["id"], "cancelled"]
    again = _cli(ops, "jobs", "cancel", job["id"])
    assert again.returncode == 1
    assert again.stderr.startswith("error: 409 Conflict: job ")
    assert "only accepted, queued or retrying" in again.stderr
    missing = _cli(ops, "jobs", "get", "no-such-job")
    assert (missing.returncode, missing.stderr) == (
        1,
        "error: 404 Not Found: job no-such-job does not exist\n",
    )
    invalid = _cli(ops, "jobs", "retry", "--status", "queued", "--yes")
    assert invalid.returncode == 1
    assert "422 Unprocessable Content" in invalid.stderr
    assert "status:" in invalid.stderr

    # A tenant's key cannot look at other tenants; an operator key can, per tenant.
    refused = _cli(ops, "jobs", "list", "--tenant", ops.tenant_id)
    assert refused.returncode == 1
    assert "--tenant needs an operator key" in refused.stderr
    listed = _lines(
        _cli(ops, "jobs", "list", "--tenant", ops.tenant_id, "--json", key=ops.operator_key)
    )
    assert [(j["id"], j["tenant_id"], j["status"]) for j in listed] == [
        (job["id"], ops.tenant_id, "cancelled"),
        (dead["id"], ops.tenant_id, "dead"),
    ]
    assert (
        _lines(
            _cli(ops, "jobs", "list", "--tenant", "someone-else", "--json", key=ops.operator_key)
        )
        == []
    )
    forbidden = _cli(ops, "jobs", "submit", "analytics-event", "-f", "name=x", key=ops.operator_key)
    assert forbidden.returncode == 1
    assert forbidden.stderr.startswith("error: 403 Forbidden: ")

    # Purge asks first, and sends nothing when declined.
    declined = _cli(ops, "dlq", "purge", "analytics-events-dlq", key=ops.operator_key, stdin="n\n")
    assert declined.returncode == 1
    assert "Delete every message of queue analytics-events-dlq?" in declined.stderr

    unreachable = _cli(ops, "jobs", "list", "--url", "http://127.0.0.1:1")
    assert unreachable.returncode == 1
    assert "cannot reach the gateway at http://127.0.0.1:1" in unreachable.stderr
    assert ops.stack.headers["Authorization"].removeprefix("Bearer ") not in unreachable.stderr


def test_problem_lines_name_each_invalid_field() -> None:
    problem = {
        "title": "Unprocessable Content",
        "detail": "invalid fields: limit",
        "errors": [{"loc": ["body", "limit"], "msg": "must be <= 1000", "type": "x"}],
    }
    response = httpx.Response(422, json=problem)
    assert problem_lines(response) == [
        "422 Unprocessable Content: invalid fields: limit",
        "limit: must be <= 1000",
    ]
    assert problem_lines(httpx.Response(502, text="<html>")) == ["502 Bad Gateway"]
