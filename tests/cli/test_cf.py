"""`jobgate cf sync` and `jobgate cf doctor` as subprocesses against a live emulator.

Every setting is read back through the official SDK, an independent client. The commands
are operator tools on the account's credentials (`JOBGATE_CF_*`): no tenant is involved,
and a wrong token or account is refused with exit code 3.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudflare
import pytest

from app.core.config import REPO_ROOT
from tests.emulator.conftest import ACCOUNT, TOKEN, Emulator, emulator_env, start_emulator
from tests.support.servers import call_jobgate

# wrangler.jsonc, as the account must hold it: (batch_size, max_retries, retry_delay,
# visibility_timeout_ms, dead letter queue). prestashop-sync's exponential retry delay is
# jobgate's consumer's business: 0 in the account.
PULL_CONSUMERS = {
    "prestashop-sync": (10, 3, 0, 30_000, "prestashop-sync-dlq"),
    "email-sending": (50, 5, 0, 30_000, "email-sending-dlq"),
    "image-processing": (5, 2, 0, 30_000, "image-processing-dlq"),
    "analytics-events": (100, 3, 0, 30_000, "analytics-events-dlq"),
    "ai-agent-tasks": (10, 3, 0, 30_000, "ai-agent-tasks-dlq"),
}
QUEUES = {*PULL_CONSUMERS, *(dlq for *_, dlq in PULL_CONSUMERS.values())}


class Cli:
    """`jobgate cf ...` in a subprocess, on the emulator's account unless told otherwise."""

    def __init__(self, emulator: Emulator, env: dict[str, str]) -> None:
        self.emulator = emulator
        self.env = env

    def run(
        self,
        *args: str,
        token: str = TOKEN,
        account: str = ACCOUNT,
        api_url: str | None = None,
        stdin: str = "",
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **self.env,
            "JOBGATE_CF_API_BASE_URL": api_url or self.emulator.api_url,
            "JOBGATE_CF_API_TOKEN": token,
            "JOBGATE_CF_ACCOUNT_ID": account,
            "JOBGATE_CF_MAX_RETRIES": "0",
            "COLUMNS": "200",
        }
        return call_jobgate("cf", *args, env=env, stdin=stdin)

    def json(self, *args: str, code: int = 0, **kw: Any) -> dict[str, Any]:
        done = self.run(*args, "--json", **kw)
        assert done.returncode == code, done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed


@pytest.fixture(scope="module")
def cli(database: tuple[str, str | None]) -> Iterator[Cli]:
    env = emulator_env(database)
    emulator = Emulator(start_emulator(env))
    try:
        yield Cli(emulator, env)
    finally:
        emulator.close()


@pytest.fixture
def cf(cli: Cli) -> Iterator[cloudflare.Cloudflare]:
    """The official SDK on a reset emulator."""
    cli.emulator.reset()
    with cloudflare.Cloudflare(
        api_token=TOKEN, base_url=cli.emulator.api_url, max_retries=0
    ) as client:
        yield client


def queues(cf: cloudflare.Cloudflare) -> dict[str, Any]:
    return {q.queue_name: q for q in cf.queues.list(account_id=ACCOUNT)}


def consumers(cf: cloudflare.Cloudflare, queue_id: str) -> list[Any]:
    return list(cf.queues.consumers.list(queue_id, account_id=ACCOUNT))


def assert_account_matches_wrangler(cf: cloudflare.Cloudflare) -> None:
    found = queues(cf)
    assert set(found) == QUEUES
    for name, queue in found.items():
        assert queue.settings.delivery_delay == 0
        assert queue.settings.message_retention_period == 345_600
        attached = consumers(cf, queue.queue_id)
        if name not in PULL_CONSUMERS:
            assert attached == [], name  # a dead letter queue
            continue
        assert len(attached) == 1, name
        (consumer,) = attached
        assert consumer.type == "http_pull"
        settings = consumer.settings
        assert (
            settings.batch_size,
            settings.max_retries,
            settings.retry_delay,
            settings.visibility_timeout_ms,
            consumer.dead_letter_queue,
        ) == PULL_CONSUMERS[name]


class TestSync:
    def test_dry_run_then_sync_creates_the_topology_then_reports_no_change(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        planned = cli.json("sync", "--dry-run")
        assert planned["dry_run"] is True
        assert planned["summary"] == {
            "create": 15,
            "update": 0,
            "replace": 0,
            "extra": 0,
            "unchanged": 0,
        }
        email = next(
            c
            for c in planned["changes"]
            if c["kind"] == "consumer" and c["queue"] == "email-sending"
        )
        assert email["fields"]["batch_size"] == {"old": None, "new": 50}
        assert queues(cf) == {}  # a dry run changes nothing

        table = cli.run("sync", "--dry-run")
        assert table.returncode == 0, table.stderr
        assert "Planned changes (dry run)" in table.stdout
        assert "prestashop-sync-dlq" in table.stdout
        assert "15 create" in table.stderr
        assert queues(cf) == {}

        done = cli.run("sync")
        assert done.returncode == 0, done.stderr
        assert "15 done" in done.stderr
        assert_account_matches_wrangler(cf)

        again = cli.json("sync")
        assert again["summary"] == {"done": 0, "left": 0, "unchanged": 15}
        assert {c["action"] for c in again["changes"]} == {"unchanged"}
        planned = cli.json("sync", "--dry-run")
        assert planned["summary"]["unchanged"] == 15
        preview = cli.run("sync", "--dry-run")
        assert "no changes: the account matches the topology" in preview.stderr
        assert_account_matches_wrangler(cf)

    def test_a_changed_setting_is_updated_old_to_new(
        self, cli: Cli, cf: cloudflare.Cloudflare, tmp_path: Path
    ) -> None:
        cli.json("sync")
        # Someone changed the account by hand: a consumer setting and a queue setting.
        email = queues(cf)["email-sending"]
        (consumer,) = consumers(cf, email.queue_id)
        cf.queues.consumers.update(
            consumer.consumer_id,
            account_id=ACCOUNT,
            queue_id=email.queue_id,
            type="http_pull",
            settings={"batch_size": 7, "max_retries": 5, "visibility_timeout_ms": 30_000},
        )
        cf.queues.edit(
            email.queue_id,
            account_id=ACCOUNT,
            queue_name="email-sending",
            settings={"message_retention_period": 3600},
        )
        # ... and the file changed too: image-processing now retries 4 times.
        wrangler = (REPO_ROOT / "wrangler.jsonc").read_text()
        changed = wrangler.replace(
            '"max_batch_size": 5,\n        "max_retries": 2',
            ('"max_batch_size": 5,\n        "max_retries": 4'),
        )
        assert changed != wrangler
        config = tmp_path / "wrangler.jsonc"
        config.write_text(changed)

        planned = cli.json("sync", "--dry-run", "--config", str(config))
        updates = {
            (c["kind"], c["queue"]): c["fields"]
            for c in planned["changes"]
            if c["action"] == "update"
        }
        assert updates == {
            ("queue", "email-sending"): {"message_retention_period": {"old": 3600, "new": 345_600}},
            ("consumer", "email-sending"): {
                "dead_letter_queue": {"old": None, "new": "email-sending-dlq"},
                "batch_size": {"old": 7, "new": 50},
            },
            ("consumer", "image-processing"): {"max_retries": {"old": 2, "new": 4}},
        }
        table = cli.run("sync", "--dry-run", "--config", str(config))
        assert "batch_size: 7 → 50" in table.stdout

        done = cli.json("sync", "--config", str(config))
        assert done["summary"] == {"done": 3, "left": 0, "unchanged": 12}
        found = queues(cf)
        assert found["email-sending"].settings.message_retention_period == 345_600
        (consumer,) = consumers(cf, found["email-sending"].queue_id)
        assert consumer.settings.batch_size == 50
        assert consumer.dead_letter_queue == "email-sending-dlq"
        (consumer,) = consumers(cf, found["image-processing"].queue_id)
        assert consumer.settings.max_retries == 4
        assert cli.json("sync", "--config", str(config))["summary"]["done"] == 0

    def test_an_extra_queue_is_reported_and_removed_only_with_prune(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        cli.json("sync")
        cf.queues.create(account_id=ACCOUNT, queue_name="bull-bridge")

        kept = cli.json("sync")
        extras = [c for c in kept["changes"] if c["action"] == "extra"]
        assert [(c["kind"], c["queue"]) for c in extras] == [("queue", "bull-bridge")]
        assert kept["summary"]["left"] == 1
        assert "bull-bridge" in queues(cf)

        refused = cli.run("sync", "--prune", stdin="n\n")
        assert refused.returncode == 1
        assert "bull-bridge" in refused.stdout  # what would go is listed first
        assert "nothing changed" in refused.stderr
        assert "bull-bridge" in queues(cf)

        pruned = cli.json("sync", "--prune", "--yes")
        assert [(c["action"], c["queue"]) for c in pruned["changes"] if c["action"] == "extra"] == [
            ("extra", "bull-bridge")
        ]
        assert "bull-bridge" not in queues(cf)
        assert_account_matches_wrangler(cf)

    def test_a_worker_consumer_is_replaced_only_with_prune(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        created = cf.queues.create(account_id=ACCOUNT, queue_name="prestashop-sync")
        assert created is not None
        assert created.queue_id is not None
        cf.queues.consumers.create(
            created.queue_id, account_id=ACCOUNT, type="worker", script_name="job-processor"
        )

        blocked = cli.run("sync")
        assert blocked.returncode == 1
        assert "prestashop-sync" in blocked.stderr
        assert "--prune" in blocked.stderr
        (worker,) = consumers(cf, created.queue_id)
        assert worker.type == "worker"  # untouched
        assert consumers(cf, queues(cf)["email-sending"].queue_id)[0].type == "http_pull"

        pruned = cli.json("sync", "--prune", "--yes")
        replaced = [c for c in pruned["changes"] if c["action"] == "replace"]
        assert [c["queue"] for c in replaced] == ["prestashop-sync"]
        assert replaced[0]["fields"]["type"] == {"old": "worker", "new": "http_pull"}
        assert_account_matches_wrangler(cf)

    def test_bad_token_wrong_account_and_missing_token(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        bad = cli.run("sync", token="not-the-token")
        assert bad.returncode == 3
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "refused the token" in lines[0]
        assert "Queues > Edit" in lines[0]
        assert "not-the-token" not in bad.stderr + bad.stdout

        other = "f" * 32
        wrong = cli.run("sync", "--dry-run", account=other)
        assert wrong.returncode == 3
        assert other in wrong.stderr
        assert TOKEN not in wrong.stderr + wrong.stdout

        missing = cli.run("sync", token="")
        assert missing.returncode == 2
        assert "JOBGATE_CF_API_TOKEN" in missing.stderr

    def test_an_unreachable_api_is_one_line(self, cli: Cli, cf: cloudflare.Cloudflare) -> None:
        # Port 1 on loopback: nothing listens there.
        url = cli.emulator.api_url.replace(f":{cli.emulator.process.port}/", ":1/")
        done = cli.run("sync", "--dry-run", api_url=url)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"error: cannot reach {url}: APIConnectionError"
        ]


class TestDoctor:
    def test_good_token_after_sync(self, cli: Cli, cf: cloudflare.Cloudflare) -> None:
        cli.json("sync")
        report = cli.json("doctor")
        assert report["ok"] is True
        statuses = {c["check"]: c["status"] for c in report["checks"]}
        assert statuses["read queues"] == "ok"
        assert [statuses[n] for n in ("push", "pull", "ack")] == ["ok", "ok", "ok"]
        for name in PULL_CONSUMERS:
            assert statuses[f"queue {name}"] == "ok"
        # The probe ran on a queue of its own, gone afterwards.
        assert set(queues(cf)) == QUEUES

        table = cli.run("doctor")
        assert table.returncode == 0, table.stderr
        assert "http_pull consumer" in table.stdout

        skipped = cli.json("doctor", "--no-probe")
        assert {c["check"]: c["status"] for c in skipped["checks"]}["push"] == "skipped"

    def test_probe_on_an_existing_queue_leaves_its_messages(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        cli.json("sync")
        queue_id = queues(cf)["email-sending"].queue_id
        # More real messages than one pull brings, all older than the probe.
        cf.queues.messages.bulk_push(
            queue_id,
            account_id=ACCOUNT,
            messages=[{"body": {"job": n}, "content_type": "json"} for n in range(25)],
        )
        report = cli.json("doctor", "--probe-queue", "email-sending")
        assert report["ok"] is True
        metrics = cf.queues.get_metrics(queue_id, account_id=ACCOUNT)
        assert metrics is not None
        assert metrics.backlog_count == 25  # the probe is acked, the real messages stay
        # ... and they are released, not left leased: deliverable at once.
        pulled = cf.queues.messages.pull(queue_id, account_id=ACCOUNT, batch_size=100)
        assert pulled is not None
        assert len(pulled.messages or []) == 25
        assert "jobgate-doctor-probe" not in queues(cf)

    def test_missing_topology_says_run_sync(self, cli: Cli, cf: cloudflare.Cloudflare) -> None:
        report = cli.json("doctor", "--no-probe", code=1)
        failed = {c["check"]: c for c in report["checks"] if c["status"] == "fail"}
        assert set(failed) == {f"queue {name}" for name in QUEUES}
        assert failed["queue email-sending"]["fix"] == "run `jobgate cf sync`"

    def test_bad_token(self, cli: Cli, cf: cloudflare.Cloudflare) -> None:
        done = cli.run("doctor", token="revoked-token")
        assert done.returncode == 3
        assert "read queues" in done.stderr
        assert "Account > Queues > Edit" in done.stdout
        assert "revoked-token" not in done.stdout + done.stderr
        report = cli.json("doctor", token="revoked-token", code=3)
        (read, *rest) = report["checks"]
        assert read["status"] == "fail"
        assert read["denied"] is True
        assert "403" in read["detail"]
        assert [c["status"] for c in rest] == ["skipped"] * 3

    def test_a_worker_consumer_is_named_with_its_fix(
        self, cli: Cli, cf: cloudflare.Cloudflare
    ) -> None:
        cli.json("sync")
        queue_id = queues(cf)["image-processing"].queue_id
        (pull,) = consumers(cf, queue_id)
        cf.queues.consumers.delete(pull.consumer_id, account_id=ACCOUNT, queue_id=queue_id)
        cf.queues.consumers.create(
            queue_id, account_id=ACCOUNT, type="worker", script_name="image-worker"
        )
        done = cli.run("doctor", "--no-probe")
        assert done.returncode == 1
        assert "queue image-processing" in done.stderr
        report = cli.json("doctor", "--no-probe", code=1)
        (failed,) = [c for c in report["checks"] if c["status"] == "fail"]
        assert failed["check"] == "queue image-processing"
        assert "Worker 'image-worker'" in failed["detail"]
        assert "jobgate cannot pull" in failed["detail"]
        assert "jobgate cf sync --prune" in failed["fix"]


def readme_cf_commands() -> list[str]:
    """The `jobgate cf ...` commands of the steps of "Moving to Cloudflare", in order."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Moving to Cloudflare", 1)[1].split("\n## ", 1)[0]
    steps = section.split("\n1. ", 1)[1]
    return re.findall(r"`(jobgate cf [^`]*)`", steps)


def test_the_readme_walkthrough(cli: Cli, cf: cloudflare.Cloudflare) -> None:
    """Each command of "Moving to Cloudflare", as written, in the README's order."""
    commands = readme_cf_commands()
    assert commands[:4] == [
        "jobgate cf doctor",
        "jobgate cf sync --dry-run",
        "jobgate cf sync",
        "jobgate cf doctor",
    ]
    assert set(commands) == {"jobgate cf doctor", "jobgate cf sync --dry-run", "jobgate cf sync"}

    # 3. Before the first sync the token checks pass and the queues show as missing.
    doctor = cli.run(*commands[0].split()[2:])
    assert doctor.returncode == 1
    assert "1 check(s) failed" not in doctor.stderr
    for line in ("read queues", "push", "pull", "ack"):
        row = next(r for r in doctor.stdout.splitlines() if r.startswith(f"│ {line} "))
        assert "│ ok " in row, row
    assert "missing" in doctor.stdout
    # 4. The preview changes nothing.
    preview = cli.run(*commands[1].split()[2:])
    assert preview.returncode == 0, preview.stderr
    assert "create" in preview.stdout
    assert queues(cf) == {}
    # 5. Sync, and again: no changes; doctor passes.
    assert cli.run(*commands[2].split()[2:]).returncode == 0
    again = cli.run(*commands[2].split()[2:])
    assert again.returncode == 0, again.stderr
    assert "no changes: the account matches the topology" in again.stderr
    assert_account_matches_wrangler(cf)
    final = cli.run(*commands[3].split()[2:])
    assert final.returncode == 0, final.stderr
