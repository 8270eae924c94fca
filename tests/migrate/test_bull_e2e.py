"""`jobgate migrate bull` against real Bull and BullMQ jobs: `node/seed.js` makes them with
the `bull` and `bullmq` packages in the machine's Redis (a prefix of this test's own, deleted
after), then the command imports them into a live gateway (`jobgate serve`) whose consumer
(`jobgate consume`, recording handlers) runs them.

Who calls what: the command runs with one tenant's `jobs:write` key, so every job lands in
that tenant (another tenant sees none); the email policy is set by the operator CLI.

Skipped when node or `tests/migrate/node/node_modules` is missing outside CI; with `CI=true`
(`.ci/run` runs `npm ci` there first) a missing toolchain fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import json5
import pytest
from redis import Redis

from app.core.clock import write_clock_offset
from app.core.config import REPO_ROOT
from tests.support.recording_handlers import LOG_ENV, read_runs
from tests.support.servers import (
    call_jobgate,
    create_tenant,
    jobgate_env,
    jobgate_process,
    jobgate_server,
    run_jobgate,
)
from tests.support.waiting import wait_until_sync

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = "redis://127.0.0.1:6379/0"
HOUR_S = 3600

if (NODE is None or not (NODE_DIR / "node_modules").is_dir()) and not IN_CI:
    pytest.skip(
        "node or tests/migrate/node/node_modules is missing (run `npm ci` there)",
        allow_module_level=True,
    )

MAPPING = """
queues:
  email:
    type: send-email
    rename: {recipient: to}
  newsletter:
    type: send-email
    rename: {recipient: to}
  prestashop:
    type_field: type
  analytics:
    names: {pageview: analytics-event}
select: {tenantId: [t1, null]}
drop: [tenantId]
"""


def seed(prefix: str) -> dict[str, Any]:
    assert NODE is not None, "CI must have node"
    assert (NODE_DIR / "node_modules").is_dir(), "CI runs `npm ci` in tests/migrate/node first"
    done = subprocess.run(
        [NODE, "seed.js", REDIS_URL, prefix],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made: dict[str, Any] = json.loads(done.stdout)
    return made


@pytest.fixture
def bull_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted after (never a FLUSH)."""
    prefix = f"jgtest-bull-{uuid.uuid4().hex[:12]}"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis.delete(*keys)
    finally:
        redis.close()


@dataclass
class Stack:
    env: dict[str, str]
    url: str
    key: str
    tenant_id: str
    clock_file: Path
    runs_file: Path
    mapping: Path
    bystander_key: str

    def migrate(
        self, prefix: str, *args: str, key: str | None = None
    ) -> tuple[int, list[dict[str, Any]], str]:
        env = {**self.env, "JOBGATE_URL": self.url, "JOBGATE_KEY": key or self.key}
        done = call_jobgate(
            "migrate",
            "bull",
            "--redis-url",
            REDIS_URL,
            "--prefix",
            prefix,
            "--mapping",
            str(self.mapping),
            "--json",
            *args,
            env=env,
            timeout=180,
        )
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        return done.returncode, rows, done.stderr

    def jobs(self, key: str | None = None) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            headers = {"Authorization": f"Bearer {key or self.key}"}
            page = http.get("/v1/jobs", params={"limit": 100}, headers=headers)
            assert page.status_code == 200, page.text
            data: list[dict[str, Any]] = page.json()["data"]
            return data


def counts(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """(queue, state, result) -> jobs, reasons folded together."""
    folded: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["queue"], row["state"], row["result"])
        folded[key] = folded.get(key, 0) + row["jobs"]
    return folded


def reasons(rows: list[dict[str, Any]], result: str) -> dict[str, list[str]]:
    return {row["reason"]: row["examples"] for row in rows if row["result"] == result}


def no_batch_wait(path: Path) -> Path:
    """The shipped topology with every queue's consumer taking what is there at once
    (prestashop-sync otherwise waits up to 30 s to fill a batch)."""
    raw = json5.loads((REPO_ROOT / "wrangler.jsonc").read_text())
    consumers = {c["queue"]: c for c in raw["queues"]["consumers"]}
    for producer in raw["queues"]["producers"]:
        consumers.setdefault(producer["queue"], {"queue": producer["queue"]})
        consumers[producer["queue"]]["max_batch_timeout"] = 0
    raw["queues"]["consumers"] = list(consumers.values())
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


@pytest.fixture
def stack(database: tuple[str, str | None], db_engine: object, tmp_path: Path) -> Iterator[Stack]:
    url, schema = database
    clock_file = tmp_path / "clock"
    write_clock_offset(clock_file, 0)
    runs_file = tmp_path / "runs.log"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING, encoding="utf-8")
    env = jobgate_env(
        url,
        schema=schema,
        extra={
            "JOBGATE_TEST_CLOCK_FILE": str(clock_file),
            "JOBGATE_WRANGLER_CONFIG": str(no_batch_wait(tmp_path / "wrangler.jsonc")),
            "JOBGATE_HANDLER_MODULES": "tests.support.recording_handlers",
            LOG_ENV: str(runs_file),
            "JOBGATE_CONSUMER_POLL_MIN_MS": "50",
            "JOBGATE_CONSUMER_POLL_MAX_MS": "200",
            "JOBGATE_SQLITE_SYNCHRONOUS": "NORMAL",
            "PYTHONPATH": str(REPO_ROOT),
            "COLUMNS": "200",
        },
    )
    tenant = create_tenant(env, "from-bull")
    bystander = create_tenant(env, "bystander")
    with jobgate_server("serve", env=env) as gateway, jobgate_process("consume", env=env):
        yield Stack(
            env,
            gateway.base_url,
            tenant["api_key"],
            tenant["tenant_id"],
            clock_file,
            runs_file,
            mapping,
            bystander["api_key"],
        )


def test_bull_and_bullmq_jobs_move_into_jobgate_run_and_import_once(
    stack: Stack, bull_prefix: str
) -> None:
    made = seed(bull_prefix)
    bull, bullmq = made["bull"], made["bullmq"]

    # Dry run: counts per queue and state, checks every payload, sends nothing.
    code, rows, stderr = stack.migrate(bull_prefix, "--dry-run", key="")
    assert code == 1, stderr  # jobs would be skipped for errors
    assert counts(rows) == {
        ("analytics", "delayed", "skipped (error)"): 1,
        ("analytics", "delayed", "not migrated"): 1,
        ("analytics", "repeatable", "not migrated"): 1,
        ("analytics", "waiting", "skipped (error)"): 1,
        ("analytics", "waiting", "would import"): 1,
        ("email", "completed", "not migrated"): 1,
        ("email", "delayed", "would import"): 1,
        ("email", "delayed", "not migrated"): 1,
        ("email", "repeatable", "not migrated"): 1,
        ("email", "failed", "not migrated"): 1,
        ("email", "waiting", "skipped (error)"): 1,
        ("email", "waiting", "would import"): 2,
        ("legacy", "waiting", "skipped (error)"): 1,
        ("newsletter", "paused", "would import"): 1,
        ("prestashop", "delayed", "would import"): 1,
        ("prestashop", "failed", "not migrated"): 1,
        ("prestashop", "prioritized", "would import"): 1,
        ("prestashop", "waiting", "not migrated"): 1,
        ("prestashop", "waiting", "skipped (error)"): 1,
        ("prestashop", "waiting", "would import"): 2,
    }
    skipped = reasons(rows, "skipped (error)")
    assert skipped["queue not in the mapping"] == []
    assert skipped["job name 'click' is not in the mapping"] == bullmq["unknown_name"]
    assert skipped["unknown job type 'sync-customers' in `type`"] == bullmq["unknown_type"]
    [invalid] = [reason for reason in skipped if reason.startswith("invalid payload: to: ")]
    assert skipped[invalid] == bull["invalid"]
    [too_far] = [reason for reason in skipped if reason.startswith("due in more than 86400 s")]
    assert skipped[too_far] == bullmq["far_delayed"]
    not_migrated = reasons(rows, "not migrated")
    assert not_migrated["not selected: tenantId is 't2'"] == bullmq["other_tenant"]
    assert "digest (cron '0 8 * * *'): make it a jobgate schedule (jobgate schedules create)" in (
        not_migrated
    )
    assert not_migrated[
        "pageview (cron '0 * * * *'): make it a jobgate schedule (jobgate schedules create)"
    ] == ["hourly"]
    assert stack.jobs() == []
    assert "would import: 9" in stderr

    # A key the gateway does not know stops the run at its first batch, importing nothing.
    code, rows, stderr = stack.migrate(bull_prefix, key="jg_not_a_key")
    assert code == 1
    assert "error: stopped: the gateway: 401 " in stderr
    assert stack.jobs() == []

    # The tenant may not email anyone yet: the gateway refuses those jobs, each one named.
    code, rows, stderr = stack.migrate(bull_prefix, "--queue", "email")
    assert code == 1, stderr
    refused = [row for row in rows if row["reason"].startswith("refused by the gateway: 422")]
    assert sum(row["jobs"] for row in refused) == 3, rows
    assert stack.jobs() == []
    run_jobgate("email-policy", "set", stack.tenant_id, "--any", env=stack.env)

    # The import (failed jobs too, as asked); the refused jobs go in now, the others once.
    code, rows, stderr = stack.migrate(bull_prefix, "--include-failed")
    assert code == 1, stderr  # the same skips as the dry run
    folded = counts(rows)
    assert folded[("email", "failed", "imported")] == 1
    assert folded[("prestashop", "failed", "imported")] == 1
    assert sum(r["jobs"] for r in rows if r["result"] == "imported") == 11, rows
    assert sum(r["jobs"] for r in rows if r["result"] == "skipped (error)") == 5, rows

    jobs = {job["idempotency_key"]: job for job in stack.jobs()}
    assert len(jobs) == 11
    assert jobs[f"bull:newsletter:{bull['paused'][0]}"]["payload"]["to"] == "buyer8@example.com"
    email = jobs[f"bull:email:{bull['waiting'][0]}"]
    assert email["type"] == "send-email"
    assert email["payload"] == {
        "to": "buyer3@example.com",
        "subject": "Order 3 shipped",
        "templateId": "order-shipped",
        "variables": {"orderId": 3},
        "priority": "normal",
    }
    orders = jobs[f"bull:prestashop:{bullmq['waiting'][0]}"]
    assert (orders["type"], orders["payload"]) == (
        "sync-orders",
        {"siteId": "shop-1", "lastDays": 7, "bulkMode": False},
    )
    single = jobs[f"bull:prestashop:{bullmq['waiting'][1]}"]
    assert (single["type"], single["payload"]) == (
        "sync-single-order",
        {"orderId": 42, "siteId": None},
    )
    page = jobs[f"bull:analytics:{bullmq['waiting'][2]}"]
    assert page["type"] == "analytics-event"
    assert page["payload"]["properties"] == {"path": "/"}
    # Delayed jobs keep what was left of their delay (1 h in Bull, 2 h in BullMQ).
    bull_delayed = jobs[f"bull:email:{bull['delayed'][0]}"]
    assert HOUR_S - 120 <= bull_delayed["delay_seconds"] <= HOUR_S
    mq_delayed = jobs[f"bull:prestashop:{bullmq['delayed'][0]}"]
    assert 2 * HOUR_S - 120 <= mq_delayed["delay_seconds"] <= 2 * HOUR_S
    assert mq_delayed["payload"] == {"siteId": "shop-2", "incremental": False, "linkVendors": True}

    # They run: the consumer drains the due jobs now and the delayed ones once they are due.
    def statuses() -> dict[str, str]:
        return {
            key: job["status"] for key, job in ((j["idempotency_key"], j) for j in stack.jobs())
        }

    delayed_keys = {bull_delayed["idempotency_key"], mq_delayed["idempotency_key"]}
    wait_until_sync(
        lambda: all(
            status == "succeeded" for key, status in statuses().items() if key not in delayed_keys
        ),
        timeout=60,
        interval=0.3,
        message="the imported jobs that are due run",
    )
    assert all(statuses()[key] != "succeeded" for key in delayed_keys)
    write_clock_offset(stack.clock_file, (2 * HOUR_S + 60) * 1000)
    wait_until_sync(
        lambda: set(statuses().values()) == {"succeeded"},
        timeout=60,
        interval=0.3,
        message="the delayed jobs run once due",
    )
    ran = {run.job_id for run in read_runs(stack.runs_file).values()}
    assert ran == {job["id"] for job in jobs.values()}

    # Again: nothing new, and Bull's keys are as node left them.
    code, rows, stderr = stack.migrate(bull_prefix, "--include-failed", "--allow-skips")
    assert code == 0, stderr
    assert not [row for row in rows if row["result"] == "imported"], rows
    # The delayed ones now ask for a shorter delay: the gateway's 409 for their key.
    assert reasons(rows, "already imported")["imported before with a longer delay"]
    missing = stack.migrate(bull_prefix, "--dry-run", "--queue", "emails")
    assert missing[0] == 1
    assert "error: no Bull queue 'emails' under the key prefix" in missing[2]
    assert sum(r["jobs"] for r in rows if r["result"] == "already imported") == 11
    assert len(stack.jobs()) == 11
    assert stack.jobs(stack.bystander_key) == []  # only the key's tenant got them
    redis = Redis.from_url(REDIS_URL)
    try:
        assert redis.llen(f"{bull_prefix}:email:wait") == 3
        assert redis.zcard(f"{bull_prefix}:prestashop:delayed") == 1
        assert redis.zcard(f"{bull_prefix}:email:delayed") == 2
        assert redis.llen(f"{bull_prefix}:newsletter:paused") == 1
    finally:
        redis.close()
