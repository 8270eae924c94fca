"""`jobgate queues list|pause|resume|purge` against a real gateway, and `jobgate tenants list`.

Real subprocesses: what is checked is what a shell sees (stdout, one-line errors, exit codes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.servers import (
    call_jobgate,
    create_tenant,
    free_port,
    jobgate_env,
    jobgate_server,
    run_jobgate,
)

pytestmark = pytest.mark.slow
QUEUE = "analytics-events"


@dataclass
class Gateway:
    env: dict[str, str]
    url: str
    operator_key: str
    tenant_key: str

    def jobgate(self, *args: str, key: str | None = None, stdin: str = "") -> Any:
        env = {**self.env, "JOBGATE_URL": self.url, "JOBGATE_KEY": key or self.operator_key}
        return call_jobgate(*args, env=env, stdin=stdin)

    def rows(self) -> dict[str, dict[str, Any]]:
        done = self.jobgate("queues", "list", "--json")
        assert done.returncode == 0, done.stderr
        return {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}

    def submit(self, count: int) -> None:
        headers = {"Authorization": f"Bearer {self.tenant_key}"}
        for _ in range(count):
            body = {"type": "analytics-event", "name": "cli"}
            response = httpx.post(f"{self.url}/v1/jobs", json=body, headers=headers)
            assert response.status_code == 202


@pytest.fixture
def gateway(database: tuple[str, str | None], db_engine: object) -> Iterator[Gateway]:
    url, schema = database
    env = jobgate_env(url, schema=schema)
    tenant = create_tenant(env, "cli-tenant")
    operator = json.loads(run_jobgate("operators", "create", "ops", "--json", env=env))
    with jobgate_server("serve", env=env) as server:
        yield Gateway(env, server.base_url, operator["api_key"], tenant["api_key"])


def test_list_pause_resume_and_purge(gateway: Gateway) -> None:
    table = gateway.jobgate("queues", "list")
    assert table.returncode == 0, table.stderr
    for name in ("prestashop-sync", "email-sending-dlq", QUEUE):
        assert name in table.stdout
    assert set(gateway.rows()) >= {"prestashop-sync", "email-sending", QUEUE, f"{QUEUE}-dlq"}

    paused = gateway.jobgate("queues", "pause", QUEUE, "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["paused"] is True
    assert gateway.rows()[QUEUE]["paused"] is True
    gateway.submit(2)
    assert gateway.rows()[QUEUE]["backlog"] == 2

    # Without --yes it asks; anything but yes purges nothing.
    refused = gateway.jobgate("queues", "purge", QUEUE, stdin="n\n")
    assert refused.returncode == 1
    assert "Delete the 2 message(s) of analytics-events" in refused.stderr
    assert gateway.rows()[QUEUE]["backlog"] == 2
    purged = gateway.jobgate("queues", "purge", QUEUE, stdin="y\n")
    assert purged.returncode == 0, purged.stderr
    assert "2 message(s), 2 job(s) cancelled" in purged.stderr
    assert gateway.rows()[QUEUE]["backlog"] == 0
    gateway.submit(1)
    scripted = gateway.jobgate("queues", "purge", QUEUE, "--yes", "--json")
    assert json.loads(scripted.stdout) == {"queue": QUEUE, "purged": 1, "cancelled_jobs": 1}

    resumed = gateway.jobgate("queues", "resume", QUEUE)
    assert resumed.returncode == 0
    assert gateway.rows()[QUEUE]["paused"] is False


def test_errors_are_one_line_and_exit_1(gateway: Gateway) -> None:
    unknown = gateway.jobgate("queues", "pause", "nope")
    assert unknown.returncode == 1
    assert unknown.stderr == "error: 404 Not Found: queue 'nope' is not in the topology\n"
    tenant = gateway.jobgate("queues", "list", key=gateway.tenant_key)
    assert tenant.returncode == 1
    assert tenant.stderr.startswith("error: 403 Forbidden: ")
    assert gateway.tenant_key not in tenant.stderr + tenant.stdout
    down = gateway.jobgate("queues", "list", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert down.stderr.startswith("error: cannot reach the gateway at http://127.0.0.1:")
    no_key = gateway.jobgate("queues", "list", key=" ")
    assert no_key.returncode != 0


def test_tenants_list(gateway: Gateway) -> None:
    create_tenant(gateway.env, "second")
    done = call_jobgate("tenants", "list", "--json", env=gateway.env)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["name"], r["api_keys"]) for r in rows] == [("cli-tenant", 1), ("second", 1)]
    assert all(r["id"] and r["created_at"] for r in rows)
    human = run_jobgate("tenants", "list", env=gateway.env)
    assert "cli-tenant" in human
    assert "second" in human
